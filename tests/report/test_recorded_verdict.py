"""The report reads what the run decided: the machine from its "run" row and each stage's findings and
advice from its "verdict" rows, not from today's registry or the machine that renders the report."""
from __future__ import annotations

from pathlib import Path

import pytest

from optimizations.base import REGISTRY, load_all
from study.core.recorder import Recorder
from study.orchestrate import record_verdicts
from study.core.records import SCHEMA_VERSION, StageResult, read_results
from study.core.recorder import append_jsonl
from study.report.reading import RunData
from study.report.verdict import env_of, verdicts


def data_bound_run(tmp_path: Path) -> Path:
    run = tmp_path / "reports" / "r"
    append_jsonl(run / "results.jsonl", StageResult(run="r", stage=-1, name="run", kind="run", notes={
        "env": {"device_type": "cpu", "cuda_count": 0, "cpu_count": 8, "bf16_native": False}}))
    append_jsonl(run / "results.jsonl", StageResult(
        run="r", stage=0, name="00-base", status="ok", throughput=100.0, throughput_ci_low=95.0,
        throughput_ci_high=105.0, t_data=0.05, t_forward=0.02, t_backward=0.02, t_optimizer=0.01,
        data_wait_share=0.5, config_hash="h0"))
    return run


def test_the_advice_is_what_the_run_decided(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = data_bound_run(tmp_path)
    record_verdicts(run, Recorder(run))
    (row,) = [r for r in read_results(run / "results.jsonl") if r.kind == "verdict"]
    assert row.name == "00-base" and row.config_hash == "h0" and row.schema == SCHEMA_VERSION
    decided = [a["toggle"] for a in row.notes["verdict"]["advice"]]
    assert decided[:3] == ["workers=2", "workers=4", "workers=8"]  # 8 cores, as the run row says

    load_all()  # the code changes after the run: workers no longer claims to help a data-bound stage
    monkeypatch.setattr(REGISTRY["workers"], "addresses", {})
    v = verdicts(RunData(run))["00-base"]
    assert [a.toggle for a in v.advice] == decided
    assert v.advice[0].reason.endswith("worker processes load the next batches while the step runs")
    assert v.findings[0].rule.bottleneck == "data-bound" and v.findings[0].value == 0.5


def test_an_older_run_without_verdict_rows_is_decided_when_read(tmp_path: Path) -> None:
    run = data_bound_run(tmp_path)
    v = verdicts(RunData(run))["00-base"]
    assert v.advice and v.advice[0].toggle == "workers=2"
    assert env_of(RunData(run)).cpu_count == 8


def test_a_row_of_the_first_format_reads_as_schema_1(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"run": "r", "stage": 0, "name": "00-base", "kind": "stage", "status": "ok"}\n')
    (row,) = read_results(path)
    assert row.schema == 1 and row.name == "00-base"
