"""Speed-ups of stages timed in the same rounds: paired ratios with a paired interval; a stage timed once
has no interval and the verdict says that nothing is proven; a stage slower beyond noise is named."""
from __future__ import annotations

import math

from study.core.recorder import Recorder
from study.core.records import StageResult, aggregate
from study.report.ladder import ladder_frame, speedup_of
from study.report.reading import RunData
from study.report.verdict import verdict


def stage(name: str, index: int, stack: tuple[str, ...], rates: list[float], **notes) -> StageResult:
    """The stage row the ladder writes from timing runs of these samples/s, round by round."""
    runs = [StageResult(run="r", stage=index, name=name, stack=list(stack), kind="repeat", repeat=i,
                        throughput=v, step_time_p50=32 / v, step_time_p90=32 / v, ci_basis="steps",
                        throughput_ci_low=v * 0.9, throughput_ci_high=v * 1.1, metric_name="top1", metric=0.5)
            for i, v in enumerate(rates)]
    row = aggregate(runs)
    row.notes = {**row.notes, **notes}
    return row


def test_drift_that_falls_on_both_runs_of_a_pair_cancels_out():
    """The machine slows down round after round (100, 80, 60 samples/s for the baseline); the stage is
    1.2x the baseline in every round. Paired, the interval is tight around 1.2; compared as two
    independent sets of runs, the drift would swamp it."""
    base = stage("00-base", 0, (), [100.0, 80.0, 60.0])
    fast = stage("01-x", 1, ("x",), [120.0, 96.0, 72.0])
    x, lo, hi = speedup_of(fast, base)
    assert math.isclose(x, 1.2) and math.isclose(lo, 1.2) and math.isclose(hi, 1.2)
    noisy = stage("01-x", 1, ("x",), [120.0, 84.0, 66.0])  # 1.2, 1.05, 1.1: a gain, less sure
    x, lo, hi = speedup_of(noisy, base)
    assert 1.0 < x < 1.2 and lo < x < hi and lo > 0


def test_one_run_a_stage_gives_no_interval_and_the_verdict_proves_nothing(tmp_path):
    run_dir = tmp_path / "reports" / "r"
    recorder = Recorder(run_dir)
    recorder.add(stage("00-base", 0, (), [100.0]))
    recorder.add(stage("01-x", 1, ("x",), [150.0]))
    df = ladder_frame(recorder.rows())
    assert math.isclose(df.speedup_vs_base[1], 1.5) and math.isnan(df.speedup_vs_base_low[1])
    text = " ".join(str(b) for b in verdict(RunData(run_dir)).blocks)
    assert "timed once" in text and "01-x" in text and "--repeats 3" in text
    assert "Fastest stage" not in text  # nothing is proven from one run each


def test_a_stage_slower_beyond_noise_is_named_with_its_toggles_own_note(tmp_path):
    run_dir = tmp_path / "reports" / "r"
    recorder = Recorder(run_dir)
    recorder.add(stage("00-base", 0, (), [100.0, 98.0, 102.0]))
    recorder.add(stage("01-amp_bf16", 1, ("amp=bf16",), [20.0, 21.0, 19.0],
                       amp="bfloat16 (bf16 is emulated on this CPU, expect it slower than fp32)"))
    text = " ".join(str(b) for b in verdict(RunData(run_dir)).blocks)
    assert "Slower beyond noise: 01-amp_bf16" in text and "emulated" in text
    assert "0.20×" in text
