"""More than one machine: node 0 leads, the others follow it into its DDP passes; Slurm's environment
names the nodes under srun."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from study.cli import build_config, run_parser
from study.core.config import ConfigError, RunConfig
from study.runner.multinode import first_host, follow, slurm_launch
from tests.util import REPO

SLURM = {"SLURM_NNODES": "2", "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[03-05,07],cpu1", "SLURM_JOB_ID": "4242"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_first_host_of_a_slurm_node_list():
    assert first_host("gpu[03-05,07],cpu1") == "gpu03" and first_host("node7") == "node7"
    assert first_host("a[1,4]") == "a1" and first_host("n[10-12]-ib") == "n10"


def test_slurm_names_the_nodes_and_flags_win(monkeypatch):
    assert slurm_launch(SLURM) == {"nnodes": 2, "node_rank": 1, "rdzv_endpoint": "gpu03:24242"}
    assert slurm_launch({**SLURM, "SLURM_NNODES": "1"}) == {}  # one node: a plain study
    assert slurm_launch({}) == {}
    for k, v in SLURM.items():
        monkeypatch.setenv(k, v)
    cfg = build_config(run_parser().parse_args(["--model", "tiny", "--stack", "ddp=2"]))
    assert (cfg.nnodes, cfg.node_rank, cfg.rdzv_endpoint) == (2, 1, "gpu03:24242")
    cfg = build_config(run_parser().parse_args(["--model", "tiny", "--rdzv-endpoint", "head:29500", "--node-rank", "0"]))
    assert (cfg.nnodes, cfg.node_rank, cfg.rdzv_endpoint) == (2, 0, "head:29500")


def test_multi_node_options_that_cannot_work_are_one_line():
    with pytest.raises(ConfigError, match="--nnodes 2 needs --rdzv-endpoint HOST:PORT"):
        RunConfig(model="tiny", nnodes=2)
    with pytest.raises(ConfigError, match="is not HOST:PORT"):
        RunConfig(model="tiny", nnodes=2, rdzv_endpoint="node0")
    with pytest.raises(ConfigError, match="--node-rank 2 is outside 0..1"):
        RunConfig(model="tiny", nnodes=2, node_rank=2, rdzv_endpoint="node0:29500")


def test_a_follower_whose_leader_never_comes_stops_within_its_bound(tmp_path, monkeypatch):
    """Nothing listens at the endpoint: the follower waits for the leader's store as long as
    --rdzv-timeout says (the store is asked for exactly that), then exits 3 saying where it looked and
    what to start."""
    import torch.distributed as dist

    asked = []
    real_store = dist.TCPStore

    def store(*args, **kwargs):
        asked.append(kwargs["timeout"].total_seconds())
        return real_store(*args, **kwargs)

    monkeypatch.setattr(dist, "TCPStore", store)
    port = free_port()
    cfg = RunConfig(model="tiny", nnodes=2, node_rank=1, rdzv_endpoint=f"127.0.0.1:{port}", rdzv_timeout=1,
                    run_name="f", reports_root=str(tmp_path / "reports"))
    said: list[str] = []
    assert follow(cfg, said.append) == 3
    assert asked == [1.0]
    assert f"127.0.0.1:{port}" in said[-1] and "--node-rank 0" in said[-1]


@pytest.mark.slow  # two studies on loopback, a DDP stage across them: about 30-60 s
def test_a_leader_and_a_follower_named_by_slurm_both_end_well(synthetic_root, tmp_path):
    port = free_port()
    args = ["--model", "tiny", "--data-root", str(synthetic_root), "--stack", "ddp=1", "--steps", "4", "--warmup", "1",
            "--subset", "64", "--batch-size", "8", "--val-steps", "1", "--profile", "", "--no-pictures",
            "--run-name", "mn", "--rdzv-timeout", "120"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "127.0.0.1",
           "SLURM_JOB_ID": str(port - 20000)}  # the port Slurm's job id gives: a free one
    procs = {}
    for node in (1, 0):  # the follower first: it waits for its leader
        cwd = tmp_path / f"node{node}"
        cwd.mkdir()
        procs[node] = subprocess.Popen([sys.executable, "-m", "study", *args], cwd=cwd, text=True,
                                       env={**env, "SLURM_NODEID": str(node)}, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    out = {node: p.communicate(timeout=400)[0] for node, p in procs.items()}
    assert procs[0].returncode == 0, out[0][-3000:]
    assert procs[1].returncode == 0, out[1][-3000:]
    assert "01-ddp_1 timing 1: ok" in out[1]  # the follower took its part in the DDP stage's pass
    rows = [json.loads(ln) for ln in (tmp_path / "node0" / "reports" / "mn" / "results.jsonl").read_text().splitlines()]
    ddp = next(r for r in rows if r["kind"] == "stage" and r["name"] == "01-ddp_1")
    assert ddp["status"] == "ok" and ddp["world_size"] == 2 and ddp["nodes"] == 2
    assert not (tmp_path / "node1" / "reports" / "mn" / "results.jsonl").exists()  # no ladder of its own
    assert "2 nodes × 1×" in (tmp_path / "node0" / "reports" / "mn" / "summary.md").read_text()
