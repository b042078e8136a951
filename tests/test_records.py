import json
import math
from dataclasses import MISSING, fields

from study.core.records import StageResult, aggregate, read_results
from study.core.stats import log_ci, mean_ci, percentile
from study.core.recorder import append_jsonl


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


def test_an_interval_over_two_noisy_runs_never_reaches_below_zero():
    """Two runs of very different speed (a neighbour took the machine during one): a t-interval on the
    values themselves would reach below zero samples/s; on their log it stays positive and still wide."""
    reps = [StageResult(run="r", stage=1, name="01-x", kind="repeat", repeat=i, throughput=t,
                        step_time_p50=1 / t, step_time_p90=1 / t) for i, t in enumerate([3000.0, 1000.0])]
    assert mean_ci([3000.0, 1000.0])[1] < 0  # what the report printed before
    agg = aggregate(reps)
    assert 0 < agg.throughput_ci_low < 1000.0 and agg.throughput_ci_high > 3000.0
    assert 0 < agg.step_time_ci_low < 1 / 3000 and agg.step_time_ci_high > 1 / 1000
    g, lo, hi = log_ci([100.0, 100.0 * math.e])  # symmetric in ratio around the geometric mean
    assert math.isclose(g, 100.0 * math.e ** 0.5) and math.isclose(g / lo, hi / g)


def test_aggregate_of_failed_stage_keeps_error():
    agg = aggregate([StageResult(run="r", stage=2, name="02-x", kind="repeat", status="failed", error="boom")])
    assert agg.status == "failed" and agg.error == "boom" and agg.kind == "stage"


def every_field_set(**changes) -> StageResult:
    """A row whose every field holds a value of its type that differs from the default and from the
    other fields (a note holding a newline, nested values), so a field lost or mixed up shows."""
    values = {}
    for i, f in enumerate(fields(StageResult)):
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        kind = type(default) if default is not MISSING else {"run": str, "stage": int, "name": str}[f.name]
        values[f.name] = {str: f"{f.name}-value", int: i + 2, float: i + 0.25, list: [f"{f.name}-a", f"{f.name}-b"],
                          dict: {f"{f.name}-key": i + 0.5}, type(None): False}[kind]  # None: an unknown yes/no
    values["notes"] = {"text": "two\nlines", "nested": {"sweep": [{"workers": 1, "samples_per_s": 2.5}]}}
    return StageResult(**{**values, **changes})


def test_every_field_survives_the_file_and_a_row_is_one_line(tmp_path):
    path = tmp_path / "results.jsonl"
    first, second = every_field_set(), every_field_set(stage=7, name="07-x", notes={})
    append_jsonl(path, first)
    append_jsonl(path, second)
    assert read_results(path) == [first, second]
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["notes"]["text"] == "two\nlines"
    assert set(json.loads(lines[0])) == {f.name for f in fields(StageResult)}  # flat: one key per field


def test_rows_of_another_schema_version_still_read(tmp_path):
    """A row written by an older study lacks newer fields (they take their defaults); one written by
    a newer study carries fields this one does not know (they are ignored, the row is kept)."""
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"run": "r", "stage": 0, "name": "00-base", "throughput": 5.0}) + "\n"
                    + json.dumps({"run": "r", "stage": 1, "name": "01-x", "a_future_field": [1, 2]}) + "\n")
    old, new = read_results(path)
    assert old == StageResult(run="r", stage=0, name="00-base", throughput=5.0, schema=1)  # no version: the first
    assert new == StageResult(run="r", stage=1, name="01-x", schema=1)
