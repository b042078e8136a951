import math

import pytest
import torch

from optimizations.base import parse_stack
from optimizations.compile import MIN_WARMUP, compile_model
from study.core.stage_plan import Plan
from study.core.config import ConfigError, RunConfig
from study.runner.ladder import plan
from tests.optimizations.helpers import cpu_env


def test_modes():
    assert parse_stack("compile")[0].value == "default"
    assert parse_stack("compile=reduce-overhead")[0].value == "reduce-overhead"
    with pytest.raises(ConfigError, match="bad value for compile"):
        parse_stack("compile=fast")


def test_configure_keeps_compile_time_out_of_measured_steps():
    (toggle,) = parse_stack("compile")
    assert toggle.configure(Plan(), RunConfig(warmup=0), cpu_env()).min_warmup == MIN_WARMUP
    cfg = RunConfig(model="tiny", warmup=5)
    stage = plan(cfg, [toggle], cpu_env())[1]
    assert stage.spec.config.warmup == 5 and stage.spec.plan.min_warmup == MIN_WARMUP  # the user's value stays


def test_compile_model_wraps_lazily():
    model = torch.nn.Linear(4, 2)
    compiled = compile_model(model, "default")
    assert compiled is not model and compiled._orig_mod is model  # nothing compiled until the first call
    with pytest.raises(ValueError):
        compile_model(model, "turbo")


@pytest.mark.slow
def test_compiled_stage_trains_and_compile_time_lands_in_warmup(toggle_stage):
    row, stage_dir = toggle_stage("compile")
    assert row.status == "ok", row.error
    assert math.isfinite(row.final_loss) and row.steps_measured >= 1
    assert row.notes["compile"].startswith("mode=default")
    # Inductor's first call takes seconds; measured steps take milliseconds
    assert row.warmup_seconds > 5 * row.step_time_p50
    stats = row.notes["compile_stats"]  # what compile did, for the report
    assert stats["graphs"] >= 1 and stats["graph_breaks"] == 0 and stats["seconds"] > 0
    assert stats["cache_hits"] + stats["cache_misses"] >= 1
