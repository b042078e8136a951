"""`--stack auto` fanned out over several nodes: the blocks a pass is cut into, the same answer as the
serial search on simulated nodes and on a local Ray cluster of two nodes (loopback only), pairs never
divided across nodes, and bad input for --ray-address."""
from __future__ import annotations

import math
import os
import sys

import pytest

from optimizations.base import Env
from study.core.config import RunConfig
from study.core.records import StageResult, read_results
from study.search import AutoSearch, pass_sequence
from study.search.notes import RunNote
from study.search.rules import fan_sequences
from benchmarks.simulated_search import SimulatedCluster, run_search

CPU = Env(device_type="cpu", cuda_count=0, cpu_count=2, bf16_native=True)
SPECS = ["amp=bf16", "channels_last", "compile=default", "workers=2", "fused_optim", "script"]


# --- blocks ----------------------------------------------------------------------------------------

def test_one_node_runs_the_serial_pass_sequence():
    for p in range(4):
        assert fan_sequences(SPECS, p, 1) == [pass_sequence(SPECS, p)]


def test_each_block_is_bracketed_by_the_incumbent_and_every_run_has_its_own_key():
    blocks = fan_sequences(SPECS, 1, 3)
    assert len(blocks) == 3
    for b in blocks:
        assert b[0][0] == "incumbent" and b[-1][0] == "incumbent"
    cands = [s for b in blocks for r, s, _ in b if r == "candidate"]
    assert sorted(cands) == sorted(SPECS)  # each candidate once per pass
    slots = [slot for b in blocks for r, _, slot in b if r == "incumbent"]
    assert len(slots) == len(set(slots))
    assert len(fan_sequences(SPECS[:2], 0, 8)) == 2  # never more blocks than candidates


def test_a_costly_candidate_gets_a_block_of_its_own():
    cost = {"compile=default": 150.0}.get
    blocks = fan_sequences(SPECS, 0, 2, cost=lambda s: cost(s, 7.0))
    alone = next(b for b in blocks if any(s == "compile=default" for _, s, _ in b))
    assert [s for r, s, _ in alone if r == "candidate"] == ["compile=default"]


# --- simulated nodes ---------------------------------------------------------------------------------

def test_simulated_nodes_give_the_serial_answer_in_less_wall_time(tmp_path):
    from benchmarks.simulated_machines import cpu_resnet18

    quiet = cpu_resnet18().with_(noise=0.0, bursts=None)  # a fixed machine: every run measures its truth
    serial = run_search(quiet, 0, tmp_path / "serial")
    fanned = run_search(quiet, 0, tmp_path / "fanned", nodes=4)
    assert fanned.stack == serial.stack and fanned.stack  # the search found something, and the same
    assert fanned.claimed[0] == pytest.approx(serial.claimed[0], rel=1e-6)
    assert fanned.seconds < 0.75 * serial.seconds


def test_the_cluster_clock_is_its_slowest_node_and_blocks_go_to_the_first_free_node():
    from benchmarks.simulated_machines import cpu_resnet18

    cluster = SimulatedCluster(cpu_resnet18().with_(noise=0.0, bursts=None), 2)
    took = {0: 30.0, 1: 10.0, 2: 10.0}

    def block(i):
        def run(node):
            cluster.machines[node].now += took[i]
            return node
        return run

    assert cluster.run([block(0), block(1), block(2)]) == [0, 1, 1]  # node 1 is free again first
    assert cluster.clock() == 30.0 and all(m.now == 30.0 for m in cluster.machines)


# --- a local Ray cluster -----------------------------------------------------------------------------

GAIN = {"amp=bf16": 1.30, "channels_last": 1.0, "script": 0.3, "ddp=2": 0.5, "hogwild=2": 0.9}


class NodeMachine:
    """Throughput = 100 × the stack's gains (channels_last pays 1.15× only with amp) × the speed of the
    node that runs it: a candidate divided by an incumbent run of another node would be off by that
    speed, and the answer with it. Measured in the Ray worker of its node (or here, on the head)."""

    def __init__(self, speed: dict[str, float]) -> None:
        self.speed = speed

    def __call__(self, sspec, pass_index: int, tag: str):
        import ray

        stack = tuple(sspec.stack)
        tp = 100.0 * self.speed.get(ray.get_runtime_context().get_node_id(), 1.0)
        for s in stack:
            tp *= 1.15 if (s == "channels_last" and "amp=bf16" in stack) else GAIN.get(s, 1.0)
        return StageResult(run="x", stage=0, name=sspec.name, stack=list(stack), status="ok", throughput=tp,
                           throughput_ci_low=tp * 0.99, throughput_ci_high=tp * 1.01, t_forward=0.03,
                           t_backward=0.05, t_optimizer=0.004, t_data=0.002, device="cpu"), 0.01


@pytest.fixture(scope="module")
def ray_cluster():
    """Two Ray nodes of one CPU each on this machine, every address on loopback."""
    saved = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED")}
    # Ray's "single-machine" mode: every node binds 127.0.0.1, never the machine's outward address (the
    # variable for the nodes' processes, the constant for this one, where Ray may be imported already)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray = pytest.importorskip("ray")
    from ray import cloudpickle
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    was = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers get NodeMachine by value
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    assert cluster.address.startswith("127.0.0.1:")
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        ray_constants.ENABLE_RAY_CLUSTER = was
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def config(tmp_path, name: str, **kw) -> RunConfig:
    return RunConfig(run_name=name, reports_root=str(tmp_path / "reports"), profiles_root=str(tmp_path / "profiles"),
                     repeats=3, stack=("auto",), budget_minutes=600.0, **kw)


@pytest.mark.slow
def test_a_search_over_two_ray_nodes_gives_the_serial_answer_and_never_divides_across_nodes(tmp_path, ray_cluster):
    import ray

    from study.search.fanout import RayNodes

    head = ray_cluster.head_node.node_id
    other = next(n.node_id for n in ray_cluster.list_all_nodes() if n.node_id != head)
    planted = NodeMachine({other: 2.0})  # the second node is twice as fast at everything
    nodes = RayNodes(ray_cluster.address, measure=planted)
    assert nodes.count == 2 and nodes.nodes[0]["NodeID"] == head  # this process's node leads
    fanned = AutoSearch(config(tmp_path, "fanned"), CPU, nodes=nodes).run()
    serial = AutoSearch(config(tmp_path, "serial"), CPU, measure=planted).run()  # all on the head, speed 1
    assert serial.stack == ["amp=bf16", "channels_last"]
    assert fanned.stack == serial.stack and fanned.rounds == serial.rounds
    assert fanned.speedup == pytest.approx(1.30 * 1.15, rel=1e-6)  # a ratio across nodes would read 2× off
    for o in fanned.outcomes:
        assert all(math.isclose(r, o.ratios[0], rel_tol=1e-9) for r in o.ratios)
    runs = [RunNote.of(r) for r in read_results(tmp_path / "reports" / "fanned" / "results.jsonl")]
    where = {n.node.rpartition("/")[2] for n in runs if n is not None}
    assert where == {head[:8], other[:8]}  # rows say which node measured what, and both did
    assert ray.is_initialized()


@pytest.mark.slow
def test_the_cli_fans_a_real_search_out_over_two_ray_nodes(tmp_path, synthetic_root, monkeypatch, capfd, ray_cluster):
    from study.cli import main
    from tests.test_search import cap_candidates
    from tests.util import results

    cap_candidates(monkeypatch, ("channels_last",))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    args = ["--model", "tiny", "--steps", "4", "--warmup", "1", "--batch-size", "16", "--subset", "64",
            "--val-subset", "16", "--val-steps", "1", "--stack", "auto", "--repeats", "2", "--budget-minutes", "600",
            "--profile", "", "--no-pictures", "--data-root", str(synthetic_root), "--run-name", "r",
            "--ray-address", ray_cluster.address]
    code = main(args)
    err = capfd.readouterr().err
    assert code == 0, err
    text = " ".join(err.split())  # however the console wraps it
    said = text[text.index("--stack auto"):][:500]  # the search's opening line says where it runs
    assert "2 nodes" in said and "Ray" in said, said
    rows = results(tmp_path, "r")
    measured = [r for r in rows if r["kind"] == "search-repeat"]
    assert all(r["status"] == "ok" and r["throughput"] > 0 for r in measured), [r.get("error") for r in measured]
    assert len({r["notes"]["search"]["node"] for r in measured}) == 2  # both nodes measured runs
    assert [r for r in rows if r["kind"] == "search-result"] and [r for r in rows if r["kind"] == "stage"]
    assert not list(tmp_path.rglob("study-search-*"))  # the nodes' scratch folders are gone


def test_a_ray_address_where_nothing_listens_is_bad_input_at_once(tmp_path, synthetic_root, capsys):
    import socket

    from study.cli import main

    with socket.socket() as s:  # a loopback port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["--model", "tiny", "--stack", "auto", "--data-root", str(synthetic_root), "--run-name", "x",
                 "--reports-root", str(tmp_path / "r"), "--profiles-root", str(tmp_path / "p"),
                 "--ray-address", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert code == 2 and f"127.0.0.1:{port}" in err and "ray start --head" in err  # where, and what to run
    assert not (tmp_path / "r" / "x" / "results.jsonl").exists()
