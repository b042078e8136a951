"""Measurement sanity: runs that would measure nothing are refused, thin or noisy stages are flagged,
and the parent waits without waking up to compete with the child it times."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from study.orchestrate import check_measured_steps
from study.core.config import ConfigError, RunConfig
from study.core.records import StageResult
from study.report.ladder import MIN_MEASURED_STEPS, NOISY_CV, checks, display_frame, ladder_frame
from study.core.child_process import wait_quietly


@pytest.mark.parametrize("samples,changes,match", [
    (20, dict(batch_size=32), "no full batch"),
    (64, dict(batch_size=32, warmup=2), "excludes them all"),  # 2 steps, both warm-up
    (64, dict(batch_size=16, warmup=4, steps=10), "excludes them all"),  # the subset caps steps at 4
])
def test_runs_that_measure_nothing_are_refused(samples, changes, match):
    with pytest.raises(ConfigError, match=match):
        check_measured_steps(RunConfig(**changes), samples)


def test_a_run_with_measured_steps_passes():
    check_measured_steps(RunConfig(batch_size=16, warmup=2), 64)  # 4 steps, 2 measured


def _row(**kw) -> StageResult:
    base = dict(run="r", stage=0, name="00-base", status="ok", throughput=100.0, throughput_ci_low=90.0,
                throughput_ci_high=110.0, steps_measured=20, step_time_cv=0.02, step_time_p50=0.1)
    return StageResult(**{**base, **kw})


def test_thin_and_noisy_stages_are_flagged_in_the_table():
    assert checks(_row()) == ""
    assert "few steps (4 measured)" in checks(_row(steps_measured=MIN_MEASURED_STEPS - 1))
    assert "noisy (step time CV 25%)" in checks(_row(step_time_cv=0.25))
    assert checks(_row(step_time_cv=NOISY_CV)) == ""  # at the threshold: not flagged
    assert checks(_row(status="failed", steps_measured=0)) == ""  # a failed stage has its own status
    shown = display_frame(ladder_frame([_row(), _row(stage=1, name="01-x", stack=["x"], step_time_cv=0.3)]))
    assert list(shown["check"]) == ["–", "noisy (step time CV 30%)"]


def test_the_parent_sleeps_while_it_waits():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.2)"])
    polls = []
    t0 = time.monotonic()
    assert wait_quietly(proc, lambda: polls.append(1), every=0.25) == 0
    waited = time.monotonic() - t0
    # at most one poll per 0.25 s of however long the child took here, not one per millisecond
    assert 1 <= len(polls) <= waited / 0.25 + 1, (len(polls), waited)


def test_throughput_comes_from_the_median_step_not_from_a_stall():
    from study.core.stats import median_ci
    from study.stage.timing_pass import median_throughput

    steady = {"samples": 10 * 32, "step_times": [0.1] * 10}
    stalled = {"samples": 10 * 32, "step_times": [0.1] * 9 + [5.0]}  # one step held up by another tenant
    assert median_throughput([steady]) == pytest.approx(320.0)
    assert median_throughput([stalled]) == pytest.approx(320.0)
    assert median_throughput([steady, steady]) == pytest.approx(640.0)  # two DDP ranks or trainers
    # independent trainers (hogwild): all the samples, over the time of the slowest trainer, not the sum
    # of their rates (which would be 320 + 160 = 480)
    slow = {"samples": 10 * 32, "step_times": [0.2] * 10}
    assert median_throughput([steady, slow]) == pytest.approx(640 / 2.0)
    lo, hi = median_ci([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert (lo, hi) == (0.2, 0.9)  # order statistics around the median, never below zero
    assert median_ci([0.3, 0.1, 0.2]) == (0.1, 0.3)  # few steps: the full range
