import math
import os

import pytest

from optimizations.base import parse_stack
from optimizations.ddp import ddp_plan
from study.core.stage_plan import Plan
from study.core.config import ConfigError, RunConfig
from study.core.stage_spec import StageSpec, worker_command
from tests.optimizations.helpers import cpu_env, cuda_env


def test_configure_launches_torchrun_and_splits_cores():
    cfg = parse_stack("ddp")[0].configure(Plan(), RunConfig(device="cpu"), cpu_env())
    assert cfg.launcher == "torchrun" and cfg.world_size == 2
    assert parse_stack("ddp=3")[0].configure(Plan(), RunConfig(device="cpu"), cpu_env()).world_size == 3
    with pytest.raises(ConfigError, match="single process"):
        ddp_plan(Plan(), RunConfig(device="cpu"), cpu_env(), 1)
    two_nodes = RunConfig(device="cpu", nnodes=2, rdzv_endpoint="node0:29500")
    assert ddp_plan(Plan(), two_nodes, cpu_env(), 1).world_size == 1  # one rank on each of 2 nodes


@pytest.mark.parametrize("spec, cores, asked, threads", [
    ("ddp", 2, 0, 1),     # 2 ranks on 2 cores: one thread each
    ("ddp", 8, 0, 4),
    ("ddp=3", 8, 0, 2),   # 3 × 2 = 6 of 8 cores: never more threads than cores
    ("ddp=4", 2, 0, 1),   # more ranks than cores: still one thread each, never zero
    ("ddp", 8, 1, 1),     # --threads 1 is kept: the split never raises what was asked for
    ("ddp", 8, 16, 4),    # --threads 16 is capped at the rank's share
])
def test_cpu_ranks_share_the_cores(spec, cores, asked, threads):
    cfg = parse_stack(spec)[0].configure(Plan(), RunConfig(device="cpu", threads=asked), cpu_env(cores))
    assert cfg.threads == threads


def test_worker_command_goes_through_torchrun(tmp_path):
    plan = ddp_plan(Plan(), RunConfig(device="cpu"), cpu_env(), 2)
    cmd = worker_command(StageSpec(1, "01-ddp", ("ddp",), RunConfig(device="cpu"), plan), tmp_path / "s.json", "timing", 0,
                         tmp_path / "o.json")
    assert "torch.distributed.run" in cmd and "--nproc-per-node=2" in cmd and "--standalone" in cmd


def test_ddp_needs_the_gpus_it_names_and_runs_as_processes_on_a_cpu(tmp_path):
    """What ddp=N asks of the machine: on CUDA, N GPUs on this node, else its stage is planned as
    skipped with the reason; on a CPU its ranks are processes sharing the cores, so any N applies."""
    from study.runner.ladder import plan

    two_gpus = cuda_env(gpus=2)
    assert parse_stack("ddp=2")[0].applicable(two_gpus) == (True, "")
    ok, reason = parse_stack("ddp=3")[0].applicable(two_gpus)
    assert not ok and "needs 3 GPUs" in reason and "has 2" in reason
    cfg = RunConfig(device="cpu", reports_root=str(tmp_path))
    on_gpus = plan(cfg, parse_stack("ddp=3"), two_gpus)
    assert [s.skip_reason for s in on_gpus] == ["", reason]
    on_cpu = plan(cfg, parse_stack("ddp=3"), cpu_env(cores=2))
    assert [s.skip_reason for s in on_cpu] == ["", ""] and on_cpu[1].spec.stack == ("ddp=3",)


@pytest.mark.slow
def test_ddp_stage_runs_two_processes(toggle_stage):
    row, stage_dir = toggle_stage("ddp")
    assert row.status == "ok", row.error
    assert row.world_size == 2 and math.isfinite(row.final_loss)
    # the ranks' own torch.get_num_threads(): together they fit this machine's cores, and one more
    # thread each would not (on 2 cores: 1 thread per rank)
    cores = os.cpu_count() or 1
    assert row.threads >= 1 and row.threads * 2 <= max(cores, 2) < (row.threads + 1) * 2, (row.threads, cores)
    pids = row.notes["ddp_pids"]
    assert len(set(pids)) == 2 and row.notes["ddp"].startswith("world size 2, backend gloo")
    assert row.notes["checkpoint_verified"] is True
