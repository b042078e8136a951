"""Every registered toggle trains: one real stage each, through the real StageRunner.

The settings table has one entry per toggle (a test fails when a new toggle has none). Each stage is
the baseline plus that toggle alone, on the tiny model with 32 px CIFAR in dry-run size (6 steps,
2 warm-up). A toggle that does not apply here must come back `skipped` with its reason, never fail.

Every stage is a child process (seconds each, more for some): all of them are marked slow. The fast
loop keeps each toggle's own in-process tests (its session trains on one batch, its plan, its hooks).
"""
import math

import pytest

from optimizations.base import Env, load_all, parse_stack

# toggle name → (spec to run, RunConfig settings beyond the tiny dry run, marks)
SETTINGS: dict[str, tuple[str, dict, tuple]] = {
    "workers": ("workers=2", {}, ()),
    "pin": ("pin", {}, ()),
    "script": ("script", {}, ()),
    "compile": ("compile", {}, (pytest.mark.slow,)),  # Inductor's C++ build: ~10-20 s on 2 cores
    "dp": ("dp", {}, ()),
    "ddp": ("ddp", {}, (pytest.mark.slow,)),  # torchrun + 2 ranks on CPU
    "amp": ("amp", {}, ()),
    "channels_last": ("channels_last", {}, ()),
    "cudnn": ("cudnn", {}, ()),
    "fused_optim": ("fused_optim", {}, ()),
    "hogwild": ("hogwild", {}, (pytest.mark.slow,)),  # 2 spawned trainers
    "batch": ("batch=16", {}, ()),
}


def test_every_registered_toggle_has_settings():
    assert set(SETTINGS) == set(load_all())


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=marks) for n, (_, _, marks) in SETTINGS.items()])
def test_toggle_trains(name, toggle_stage):
    spec, settings, _ = SETTINGS[name]
    (toggle,) = parse_stack(spec)
    applies, reason = toggle.applicable(Env.detect("auto"))
    row, _ = toggle_stage(spec, **settings)
    if not applies:
        assert row.status == "skipped" and row.reason == reason and reason
        return
    assert row.stack == [spec]
    assert row.status == "ok", row.error
    assert row.steps_measured >= 1 and row.throughput > 0
    assert math.isfinite(row.final_loss) and math.isfinite(row.metric)
    assert row.notes.get("checkpoint_verified") is True
