"""More than one machine: node 0 leads the study, the other nodes follow it into its DDP passes.

The leader plans and runs the whole ladder as on one node; only its torchrun launches span nodes.
Before each one it posts what the pass is (the stage spec, the pass, the repeat) in a torch TCPStore
it hosts beside the rendezvous (port + 1): the c10d store torchrun itself is built on, so no protocol
of ours crosses the network. A follower runs the same command with its own --node-rank: it checks its
data as a leader would, then reads the next posting, joins that pass through torchrun's static
rendezvous, answers how its part went, and repeats until the leader posts the end. It writes no ladder,
only a log under reports/<run>/node-<rank>/; it exits 0 when every part it took succeeded, 3 naming the
stages that did not, and 3 when the leader never came within --rdzv-timeout.

Under Slurm's srun the node count, this node's rank and the endpoint come from its environment
(SLURM_NNODES, SLURM_NODEID, the first host of SLURM_JOB_NODELIST, a port derived from SLURM_JOB_ID);
flags win.
"""
from __future__ import annotations

import datetime
import json
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from study.core.config import RunConfig
from study.core.config_checks import endpoint_parts

KEY_NEXT = "study/next/{}"
KEY_RESULT = "study/result/{}/{}"
KEY_BYE = "study/bye/{}"
SLURM_PORT_BASE = 20000  # port = base + job id mod 20000: each job its own, above the usual services
BYE_WAIT_S = 60.0  # how long a leader that ended waits for the followers to read that it ended


# --- Slurm ----------------------------------------------------------------------------------------

def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: "gpu[03-05,07],cpu1" → "gpu03"."""
    head = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not head:
        return ""
    prefix, ranges = head.group(1), head.group(2)
    return prefix + ranges.split(",")[0].split("-")[0] if ranges else prefix


def slurm_launch(env: dict[str, str]) -> dict[str, Any]:
    """The launch options Slurm's environment implies under srun ({} outside Slurm or on one node)."""
    try:
        nnodes = int(env.get("SLURM_NNODES", "") or env.get("SLURM_JOB_NUM_NODES", ""))
    except ValueError:
        return {}
    host = first_host(env.get("SLURM_JOB_NODELIST", "") or env.get("SLURM_NODELIST", ""))
    if nnodes < 2 or not host or not env.get("SLURM_NODEID", "").isdigit():
        return {}
    job = int(env["SLURM_JOB_ID"]) if env.get("SLURM_JOB_ID", "").isdigit() else 0
    return {"nnodes": nnodes, "node_rank": int(env["SLURM_NODEID"]),
            "rdzv_endpoint": f"{host}:{SLURM_PORT_BASE + job % 20000}"}


# --- the leader -----------------------------------------------------------------------------------

def store_of(cfg: RunConfig, leader: bool) -> Any:
    import torch.distributed as dist

    host, port = endpoint_parts(cfg.rdzv_endpoint)
    return dist.TCPStore(host, port + 1, is_master=leader, wait_for_workers=False,
                         timeout=datetime.timedelta(seconds=cfg.rdzv_timeout))


class OneNode:
    """A study on one node: nothing to post."""

    def announce(self, spec: Any, pass_name: str, repeat: int) -> int | None:
        return None

    def follower_errors(self, slot: int) -> str:
        return ""

    def finish(self) -> None:
        pass


class Fleet(OneNode):
    """The leader's side: posts each multi-node pass and the end."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.store = store_of(cfg, leader=True)
        self.slot = 0
        self.ended = False

    def announce(self, spec: Any, pass_name: str, repeat: int) -> int:
        slot, self.slot = self.slot, self.slot + 1
        self.store.set(KEY_NEXT.format(slot), json.dumps({"spec": spec.to_dict(), "pass": pass_name, "repeat": repeat}))
        return slot

    def follower_errors(self, slot: int) -> str:
        """What the followers said of a pass that failed here (the leader sees only its own ranks)."""
        said = []
        for node in range(1, self.cfg.nnodes):
            key = KEY_RESULT.format(slot, node)
            if self.store.check([key]):
                got = json.loads(self.store.get(key))
                if got.get("error"):
                    said.append(f"node {node}: {got['error']}")
        return "; ".join(said)

    def finish(self) -> None:
        """Post the end and give the followers a moment to read it before this store goes away."""
        if self.ended:
            return
        self.ended = True
        self.store.set(KEY_NEXT.format(self.slot), json.dumps({"end": True}))
        try:
            self.store.wait([KEY_BYE.format(n) for n in range(1, self.cfg.nnodes)],
                            datetime.timedelta(seconds=BYE_WAIT_S))
        except Exception:  # noqa: BLE001 — a follower that left early or never came: nothing to wait for
            pass


def fleet_of(cfg: RunConfig) -> OneNode:
    return Fleet(cfg) if cfg.nnodes > 1 and cfg.node_rank == 0 else OneNode()


# --- a follower -----------------------------------------------------------------------------------

def follow(cfg: RunConfig, say: Callable[[str], None]) -> int:
    """Take part in every multi-node pass the leader posts; 0 when each part succeeded, else 3."""
    from study.core.child_process import run_child
    from study.core.stage_spec import StageSpec, worker_command

    own = Path(cfg.reports_root) / cfg.run_name / f"node-{cfg.node_rank}"
    say(f"node {cfg.node_rank} of {cfg.nnodes}: following node 0 at {cfg.rdzv_endpoint} (waiting up to "
        f"{cfg.rdzv_timeout:.0f} s for each of its passes)")
    try:
        store = store_of(cfg, leader=False)
    except Exception as e:  # noqa: BLE001 — the store's timeout, a refused connection: the leader is not there
        say(f"no leader at {cfg.rdzv_endpoint} within {cfg.rdzv_timeout:.0f} s ({type(e).__name__}); start node 0 "
            f"(--node-rank 0) with the same command")
        return 3
    failed: list[str] = []
    slot = 0
    while True:
        try:
            post = json.loads(store.get(KEY_NEXT.format(slot)))
        except Exception as e:  # noqa: BLE001 — the leader stopped posting (it died, or took too long)
            say(f"node 0 posted no pass within {cfg.rdzv_timeout:.0f} s after pass {slot} ({type(e).__name__}); "
                f"stopping")
            return 3
        if post.get("end"):
            break
        spec = StageSpec.from_dict(post["spec"])
        # this node's rank, and this node's own folders for what its ranks write (logs, errors)
        mine = replace(spec, config=spec.config.replace(node_rank=cfg.node_rank, reports_root=str(own / "reports"),
                                                        profiles_root=str(own / "profiles")))
        folder = own / mine.name
        folder.mkdir(parents=True, exist_ok=True)
        stage_file, out = folder / "stage.json", folder / f"{post['pass']}-r{post['repeat']}-{slot}.json"
        mine.save(stage_file)
        what = f"{spec.name} {post['pass']} {post['repeat'] + 1}"
        _, err = run_child(worker_command(mine, stage_file, post["pass"], post["repeat"], out),
                           out.with_suffix(".log"), out, expect_payload=False)
        store.set(KEY_RESULT.format(slot, cfg.node_rank), json.dumps({"error": err}))
        say(f"  {what}: {'ok' if not err else 'failed: ' + err[:300]}")
        if err:
            failed.append(spec.name)
        slot += 1
    store.set(KEY_BYE.format(cfg.node_rank), "1")
    if failed:
        say(f"node {cfg.node_rank}: its part of {', '.join(sorted(set(failed)))} failed (logs in {own}/)")
        return 3
    say(f"node {cfg.node_rank}: took part in {slot} passes, all ok; node 0 holds the report")
    return 0
