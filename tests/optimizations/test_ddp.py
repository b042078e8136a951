import math
import os

import pytest

from optimizations.base import parse_stack
from optimizations.ddp import ddp_config
from study.config import ConfigError, RunConfig
from study.spec import StageSpec, worker_command
from tests.optimizations.helpers import cpu_env


def test_configure_launches_torchrun_and_splits_cores():
    cfg = parse_stack("ddp")[0].configure(RunConfig(device="cpu"), cpu_env())
    assert cfg.launcher == "torchrun" and cfg.world_size == 2
    assert cfg.threads == max(1, (os.cpu_count() or 1) // 2)
    assert parse_stack("ddp=3")[0].configure(RunConfig(device="cpu"), cpu_env()).world_size == 3
    with pytest.raises(ConfigError, match="single process"):
        ddp_config(RunConfig(device="cpu"), cpu_env(), 1)
    assert ddp_config(RunConfig(device="cpu", nnodes=2), cpu_env(), 1).world_size == 1  # one rank on each of 2 nodes


def test_worker_command_goes_through_torchrun(tmp_path):
    cfg = ddp_config(RunConfig(device="cpu"), cpu_env(), 2)
    cmd = worker_command(StageSpec(1, "01-ddp", ("ddp",), cfg), tmp_path / "s.json", "timing", 0, tmp_path / "o.json")
    assert "torch.distributed.run" in cmd and "--nproc-per-node=2" in cmd and "--standalone" in cmd


def test_applicable_on_cpu():
    assert parse_stack("ddp")[0].applicable(cpu_env())[0]


@pytest.mark.slow
def test_ddp_stage_runs_two_processes(toggle_stage):
    row, stage_dir = toggle_stage("ddp")
    assert row.status == "ok", row.error
    assert row.world_size == 2 and math.isfinite(row.final_loss)
    pids = row.notes["ddp_pids"]
    assert len(set(pids)) == 2 and row.notes["ddp"].startswith("world size 2, backend gloo")
    assert row.notes["checkpoint_verified"] is True
