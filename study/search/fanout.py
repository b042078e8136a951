"""Where the search's runs happen: on this machine one after another (Serial), or on every node of a Ray
cluster at once (RayNodes, `--ray-address`).

A pass of a round is cut into blocks (study.search.rules.fan_sequences): each block is the incumbent, a
few candidates and the incumbent again, and runs from start to end on one node, so each candidate is
divided only by incumbent runs measured on its own node, seconds apart; blocks of one pass run on
different nodes at the same time. With N identical nodes a round takes about 1/N of its serial wall
time (benchmarks/search_fanout.py).

Why Ray and not Slurm job steps: Ray places one task on one named node
(NodeAffinitySchedulingStrategy), reports each task's result back to this process, runs on any set of
machines (a Slurm allocation included: `ray start` on each node of the job), and a local Ray cluster
of several nodes on one machine tests the very same code path; job steps exist only inside a Slurm
allocation and report back through files. Each node has a thread here that takes the next block as
the node comes free and waits on its runs one after another; the child run on the node is the same
`measure_child` a serial search runs.
"""
from __future__ import annotations

import json
import os
import queue
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Callable, Sequence

from study.core.errors import ConfigError
from study.core.records import StageResult

# (stage spec, pass index, tag for its files) -> (the run's row, its wall seconds)
Measure = Callable[[Any, int, str], tuple[StageResult, float]]


class Serial:
    """One node, this machine: the blocks of a pass one after another (with one node there is one)."""

    count = 1

    def __init__(self, measure: Measure) -> None:
        self._measure = measure

    def measure(self, node: int, sspec, pass_index: int, tag: str) -> tuple[StageResult, float, str]:
        row, seconds = self._measure(sspec, pass_index, tag)
        return row, seconds, ""

    def run(self, blocks: Sequence[Callable[[int], Any]]) -> list[Any]:
        """Each block called with the node it runs on; their results in their order."""
        return [b(0) for b in blocks]


def rebased(spec_dict: dict[str, Any], root: str) -> Any:
    """The stage spec with its reports and profiles under `root` (a node's own scratch folder): two nodes
    on one shared file system never write the same run folder, and nothing is left on the node."""
    from study.core.stage_spec import StageSpec

    sspec = StageSpec.from_dict(spec_dict)
    return replace(sspec, config=sspec.config.replace(reports_root=os.path.join(root, "reports"),
                                                      profiles_root=os.path.join(root, "profiles")))


def measure_on_node(spec_dict: dict[str, Any], pass_index: int, tag: str, threads_env: str | None,
                    measure: Measure | None = None) -> tuple[dict[str, Any], float, str]:
    """What a node runs for one run of the search: the child run in a scratch folder of its own, with
    this node's worker process as the study (its child's load is the study's, everything else on the
    node is foreign). Returns (the row as a dict, wall seconds, this node's host name)."""
    import shutil
    import tempfile

    from study.core.machine_load import STUDY_PID_ENV
    from study.search.measure import measure_child

    os.environ[STUDY_PID_ENV] = str(os.getpid())
    # Ray sets OMP_NUM_THREADS for its workers; the run gets the thread setting this study was started with
    if threads_env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = threads_env
    root = tempfile.mkdtemp(prefix="study-search-")
    try:
        row, seconds = (measure or measure_child)(rebased(spec_dict, root), pass_index, tag)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return json.loads(row.to_json()), seconds, socket.gethostname()


def absolute_paths(sspec) -> Any:
    """The spec with its data root and weights as absolute paths: a node resolves them in its own
    working directory otherwise. Every node must hold the data at the same path (or read the same
    s3:// URL), as for a multi-node DDP stage."""
    cfg = sspec.config
    changes = {}
    if cfg.data_root and "://" not in cfg.data_root:
        changes["data_root"] = os.path.abspath(cfg.data_root)
    if cfg.weights:
        changes["weights"] = os.path.abspath(cfg.weights)
    return replace(sspec, config=cfg.replace(**changes)) if changes else sspec


def connect(address: str):
    """ray, initialised on the cluster at `address`; bad input (exit 2) when Ray is missing or no
    cluster answers there."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray-address needs Ray: pip install 'ray>=2.9' in this environment (the 'cluster' extra: "
                          "pip install -e '.[cluster]'), on every node") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a study sends nothing anywhere of its own accord
    host, _, port = address.rpartition(":")
    if address != "auto" and not address.startswith("ray://"):
        if not (host and port.isdigit()):
            raise ConfigError(f"--ray-address {address!r}: give HOST:PORT of the cluster's head (ray start --head "
                              f"prints it; 6379 by default), or auto on a node of the cluster")
        try:  # Ray itself retries a dead address for minutes; a closed port is bad input at once
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as e:
            raise ConfigError(f"--ray-address {address}: nothing answers there ({e.strerror or type(e).__name__}); start "
                              f"the cluster with `ray start --head --port {port}` on node 0 and `ray start "
                              f"--address={address}` on each other node") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False, include_dashboard=False)
        except Exception as e:  # Ray raises ConnectionError, ValueError or its own errors here
            raise ConfigError(f"--ray-address {address}: no Ray cluster answered ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); start one with `ray start --head` on node 0 "
                              f"and `ray start --address=NODE0:6379` on each other node, then pass "
                              f"--ray-address NODE0:6379 (or auto on a node of the cluster)") from None
    return ray


def node_shape(node: dict[str, Any]) -> tuple[float, float]:
    res = node.get("Resources", {})
    return float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))


class RayNodes:
    """Every alive node of a Ray cluster, this process's own node first; each takes the next block as it comes free."""

    def __init__(self, address: str, measure: Measure | None = None) -> None:
        self.ray = connect(address)
        self.address = address
        self.measure_fn = measure  # None: the real child run (tests give a fake machine here)
        own = self.ray.get_runtime_context().get_node_id()
        alive = [n for n in self.ray.nodes() if n.get("Alive")]
        alive.sort(key=lambda n: (n["NodeID"] != own, n["NodeID"]))
        shapes = {node_shape(n) for n in alive}
        if len(shapes) > 1:
            listed = ", ".join(f"{n.get('NodeManagerAddress', '?')} {c:g} CPU {g:g} GPU"
                               for n, (c, g) in ((n, node_shape(n)) for n in alive))
            raise ConfigError(f"--ray-address {address}: the search compares runs measured on identical nodes, and these "
                              f"differ ({listed}); give a cluster of one kind of node")
        self.nodes = alive
        self.count = len(alive)
        self.threads_env = os.environ.get("OMP_NUM_THREADS")
        self._remote = self.ray.remote(num_cpus=0, max_retries=0)(measure_on_node)

    def describe(self) -> str:
        cpus, gpus = node_shape(self.nodes[0])
        return f"{self.count} nodes of Ray's cluster at {self.address} ({cpus:g} CPU{f', {gpus:g} GPU' if gpus else ''} each)"

    def measure(self, node: int, sspec, pass_index: int, tag: str) -> tuple[StageResult, float, str]:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node_id = self.nodes[node]["NodeID"]
        task = self._remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
        try:
            row, seconds, host = self.ray.get(task.remote(absolute_paths(sspec).to_dict(), pass_index, tag,
                                                          self.threads_env, self.measure_fn))
        except Exception as e:  # the node died or the task could not run there: a failed run, named
            first = str(e).strip().splitlines()[-1] if str(e).strip() else ""
            failed = StageResult(status="failed", error=f"node {node} ({node_id[:8]}): {type(e).__name__}: {first}",
                                 kind="repeat", **sspec.identity())
            return failed, 0.0, node_id[:8]
        return StageResult.from_dict(row), seconds, f"{host}/{node_id[:8]}"

    def run(self, blocks: Sequence[Callable[[int], Any]]) -> list[Any]:
        """Each node takes the next block as it comes free (a thread per node waits on its runs); the
        blocks' results in their order. An error in a block is raised here once all have ended."""
        todo = queue.SimpleQueue()
        for i, b in enumerate(blocks):
            todo.put((i, b))
        out: list[Any] = [None] * len(blocks)

        def node_loop(node: int) -> None:
            while True:
                try:
                    i, b = todo.get_nowait()
                except queue.Empty:
                    return
                out[i] = b(node)

        with ThreadPoolExecutor(max_workers=self.count, thread_name_prefix="search-node") as pool:
            for f in [pool.submit(node_loop, node) for node in range(min(self.count, len(blocks)))]:
                f.result()
        return out

