import json
import math

from study.records import StageResult, aggregate, append_jsonl, mean_ci, percentile, read_results


def test_append_and_read_skip_torn_lines(tmp_path):
    path = tmp_path / "results.jsonl"
    append_jsonl(path, StageResult(run="r", stage=0, name="00-base", throughput=10.0))
    with open(path, "a") as fh:
        fh.write('{"run": "r", "stage": 1, "na')  # a writer killed mid-line elsewhere
    rows = read_results(path)
    assert [r.name for r in rows] == ["00-base"] and rows[0].throughput == 10.0


def test_mean_ci_and_percentile():
    m, lo, hi = mean_ci([10.0, 12.0, 11.0])
    assert m == 11.0 and lo < 11.0 < hi
    # t(2) = 4.303, sd = 1 → half width 4.303/sqrt(3)
    assert math.isclose(hi - m, 4.303 / math.sqrt(3), rel_tol=1e-6)
    assert mean_ci([5.0]) == (5.0, 5.0, 5.0)
    assert percentile([1, 2, 3, 4], 0.5) == 2.5 and percentile([1, 2, 3, 4], 0.9) > 3


def test_aggregate_takes_median_and_ci_over_repeats():
    reps = [StageResult(run="r", stage=1, name="01-x", kind="repeat", repeat=i, throughput=t,
                        step_time_p50=1 / t, step_time_p90=1 / t) for i, t in enumerate([100.0, 110.0, 90.0])]
    agg = aggregate(reps)
    assert agg.kind == "stage" and agg.repeats == 3 and agg.throughput == 100.0
    assert agg.ci_basis == "repeats" and agg.throughput_ci_low < 100.0 < agg.throughput_ci_high


def test_aggregate_of_failed_stage_keeps_error():
    agg = aggregate([StageResult(run="r", stage=2, name="02-x", kind="repeat", status="failed", error="boom")])
    assert agg.status == "failed" and agg.error == "boom" and agg.kind == "stage"


def test_row_is_flat_json_with_the_design_fields():
    row = json.loads(StageResult(run="r", stage=0, name="00-base").to_json())
    for key in ("stage", "name", "stack", "status", "throughput", "step_time_p50", "step_time_p90",
                "throughput_ci_low", "throughput_ci_high", "t_data", "t_h2d", "t_forward", "t_backward",
                "t_optimizer", "peak_memory_mb", "mfu", "metric", "profiles", "config_hash", "versions",
                "git_sha"):
        assert key in row
