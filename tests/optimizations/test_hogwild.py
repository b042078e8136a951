import math
import os

import pytest
import torch

from optimizations.base import parse_stack
from optimizations.hogwild import adopt_shared, run_trainers, shared_tensors
from study.core.stage_plan import Plan
from study.core.config import RunConfig
from tests.optimizations.helpers import cpu_env, cuda_env, make_session


def test_configure_and_applicability():
    cfg = parse_stack("hogwild")[0].configure(Plan(), RunConfig(), cpu_env())
    assert cfg.launcher == "hogwild" and cfg.world_size == 2
    assert parse_stack("hogwild=3")[0].configure(Plan(), RunConfig(), cpu_env()).world_size == 3
    ok, reason = parse_stack("hogwild")[0].applicable(cuda_env())
    assert not ok and "ddp" in reason


@pytest.mark.parametrize("spec, cores, asked, threads", [
    ("hogwild", 2, 0, 1),    # 2 trainers on 2 cores: one thread each
    ("hogwild", 8, 0, 4),
    ("hogwild=3", 8, 0, 2),
    ("hogwild=4", 2, 0, 1),  # more trainers than cores: one thread each, never zero
    ("hogwild", 8, 1, 1),    # what was asked for is never raised
])
def test_trainers_share_the_cores(spec, cores, asked, threads):
    assert parse_stack(spec)[0].configure(Plan(), RunConfig(threads=asked), cpu_env(cores)).threads == threads


def test_adopt_shared_keeps_parameter_objects():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    shared = shared_tensors(a)
    assert all(t.is_shared() for t in shared.values())
    weight = b.weight
    adopt_shared(b, shared)
    assert b.weight is weight and b.weight.data_ptr() == a.weight.data_ptr()
    with torch.no_grad():
        b.weight.add_(1.0)
    assert torch.equal(a.weight, b.weight)


@pytest.mark.slow  # two spawned trainer processes
def test_trainers_update_the_parent_model(tiny_cfg):
    sess = make_session(tiny_cfg, "hogwild")
    model = sess.state.base_model
    before = [p.detach().clone() for p in model.parameters()]
    from study.stage.timing_pass import kit

    reports = run_trainers(sess.spec, kit(), model, 2)
    assert [r["rank"] for r in reports] == [0, 1]
    pids = {r["pid"] for r in reports}
    assert len(pids) == 2 and os.getpid() not in pids
    assert all(len(r["steps"]) == tiny_cfg.steps for r in reports)
    # the parent never trained: every change was written by the trainers into shared memory
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(r["summary"]["samples"] > 0 for r in reports)


@pytest.mark.slow
def test_hogwild_stage(toggle_stage):
    row, stage_dir = toggle_stage("hogwild")
    assert row.status == "ok", row.error
    assert row.world_size == 2 and math.isfinite(row.final_loss) and row.throughput > 0
    cores = os.cpu_count() or 1  # two trainers fit this machine's cores; one more thread each would not
    assert row.threads >= 1 and row.threads * 2 <= max(cores, 2) < (row.threads + 1) * 2, (row.threads, cores)
    assert len(set(row.notes["hogwild_pids"])) == 2
    assert row.notes["checkpoint_verified"] is True
    assert (stage_dir / "records-r0.csv").is_file()


@pytest.mark.slow  # two spawned trainers that fail: ~6-10 s
def test_a_failing_trainer_fails_the_stage_without_hanging(tiny_cfg, tmp_path):
    import dataclasses

    sess = make_session(tiny_cfg, "hogwild")
    broken = dataclasses.replace(sess.spec, config=sess.spec.config.replace(data_root=str(tmp_path / "gone")))
    with pytest.raises(RuntimeError, match="trainer [01] failed"):
        from study.stage.timing_pass import kit

        run_trainers(broken, kit(), sess.state.base_model, 2)
