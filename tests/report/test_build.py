"""summary.md / summary.html / PNGs of one run, built from results.jsonl and its profile files."""
from __future__ import annotations

import gzip
import json

from study.report import build_report, write_ladder
from tests.report.helpers import make_run, read_rows, write_rows
from tests.util import table_rows


def test_build_report_writes_summary_md_html_and_plots(tmp_path):
    run = make_run(tmp_path, "fx")
    write_ladder(run, print_table=False)
    (run / "worker_sweep.json").write_text(json.dumps({"key": "k", "chosen": 2, "table": [
        {"workers": 0, "samples_per_s": 900.0}, {"workers": 2, "samples_per_s": 1800.0}]}))
    (written,) = build_report([run], print_tables=False)
    md = written.read_text()
    assert written == run / "summary.md"
    # ladder, phases (ms per step from t_* fields), MFU, metric, skipped reason
    assert "| 0 00-base | (baseline) | 1000.0 | 950.0–1050.0 |" in md
    assert "| 00-base | 12.00 | 0.50 | 6.00 | 11.00 | 2.50 | 32.00 | 37.5 |" in md
    assert "| 01-workers_2 | 16.00 MFLOP | 32.00 GFLOP/s | 320.00 GFLOP/s | 10.00 | estimate: 2 cores |" in md
    assert "| 0 | 900.0 | – |  |" in md and "| 2 | 1800.0 | – | ✓ |" in md
    assert "pin needs an accelerator" in md and "expected scalar type BFloat16" in md
    for png in ("throughput.png", "phases.png", "curves.png", "worker_sweep.png"):
        assert (run / png).stat().st_size > 1000, png
        assert f"]({png})" in md
    html = (run / "summary.html").read_text()
    assert "<table" in html and "01-workers_2" in html and "title='phases.png'" in html
    assert "<img src='data:image/png;base64," in html and "<img src='phases.png'" not in html  # one file


def add_profiles(tmp_path, run):
    """Trace summaries and cProfile tables for the first two stages, recorded as the CLI records them."""
    prof = tmp_path / "profiles" / "fx"
    rows = read_rows(run)
    ops = {"00-base": {"aten::convolution": 8.0, "aten::batch_norm": 4.0},
           "01-workers_2": {"aten::convolution": 3.0, "prim::FusedConvBN": 1.0}}
    for row in rows:
        if row["kind"] == "stage" and row["name"] in ops:
            d = prof / row["name"]
            d.mkdir(parents=True)
            table = {k: {"calls": 1.0, "self_ms": v, "total_ms": v} for k, v in ops[row["name"]].items()}
            step = sum(ops[row["name"]].values()) + 2.0
            (d / "trace_summary.json").write_text(json.dumps({
                "steps": 3, "step_ms_mean": step, "loop_step_ms": [step] * 3, "ops": table, "kernels": {},
                "categories_ms": {"cpu_exec": step - 2.0, "dataloader": 1.5, "other": 0.5}}))
            (d / "cprofile_top.json").write_text(json.dumps({"steps": 3, "by_tottime": [
                {"function": "to_tensor", "file": "/x/functional.py", "line": 127, "ncalls": 96,
                 "tottime_ms": 2.5, "cumtime_ms": 5.0}], "by_cumulative": []}))
            # recorded relative to where the study ran (the tmp root), as the CLI does
            row["profiles"] = {"trace_summary": f"profiles/fx/{row['name']}/trace_summary.json",
                               "cprofile_json": f"profiles/fx/{row['name']}/cprofile_top.json",
                               "pyspy_error": "py-spy exited with code 1 and wrote no profile"}
    write_rows(run, rows)
    (run / "config.json").write_text(json.dumps({"config": {"profiles_root": str(prof.parent)}}))


def test_report_reads_trace_and_cprofile_files_of_the_run(tmp_path):
    """Profile paths in results.jsonl lead to the trace categories, top ops, cProfile rows and the diff."""
    run = make_run(tmp_path, "fx")
    add_profiles(tmp_path, run)
    build_report([run], print_tables=False)
    md = (run / "summary.md").read_text()
    assert "## Trace: step-time categories" in md
    assert "| 00-base | 1.50 | 12.00 | 0.50 | 14.00 | 14.00 | 14.00 | 0.44 | 3 |" in md
    assert "### 00-base → 01-workers_2" in md
    assert "| faster | op | aten::convolution | 8.000 | 3.000 | -5.000 |" in md
    assert "| appeared | op | prim::FusedConvBN |" in md and "| disappeared | op | aten::batch_norm |" in md
    assert "| to_tensor | functional.py:127 | 32 | 2.50 | 5.00 |" in md
    assert "pyspy_error: py-spy exited with code 1" in md
    assert (run / "trace_categories.png").stat().st_size > 1000


def test_console_tells_the_same_story_as_the_summary(tmp_path, capsys):
    run = make_run(tmp_path, "fx")
    add_profiles(tmp_path, run)
    build_report([run])
    err = capsys.readouterr().err
    assert "fx: phases (timing pass) and MFU" in err
    # the phases row of the base stage, with its MFU from the MFU table
    phases = table_rows(err, after="fx: phases (timing pass) and MFU")
    assert phases["00-base"] == ["00-base", "12.00", "0.50", "6.00", "11.00", "2.50", "32.00", "5.00"]
    assert "fx: trace categories, ms/step" in err
    assert "00-base → 01-workers_2: faster: aten::convolution" in err
    assert err.index("phases (timing pass)") < err.index("trace categories") < err.index("summary: ")


def test_report_summarizes_a_trace_when_its_summary_is_missing(tmp_path):
    run = make_run(tmp_path, "fx")
    trace = tmp_path / "rank0.1.pt.trace.json.gz"
    events = [{"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#2", "ts": 0, "dur": 1000, "pid": 1, "tid": 1},
              {"ph": "X", "cat": "cpu_op", "name": "aten::addmm", "ts": 100, "dur": 600, "pid": 1, "tid": 1}]
    with gzip.open(trace, "wt") as fh:
        json.dump({"traceEvents": events}, fh)
    rows = read_rows(run)
    for row in rows:
        if row["kind"] == "stage" and row["name"] == "00-base":
            row["profiles"] = {"torch_trace": str(trace)}
    write_rows(run, rows)
    build_report([run], print_tables=False)
    md = (run / "summary.md").read_text()
    assert "| 00-base | 0.60 | 0.40 | 1.00 | 1.00 | – | 0.03 | 1 |" in md  # cpu_exec, other, sums; no loop timer
    assert "| op | aten::addmm | 1 | 0.600 |" in md


def test_cli_report_command_builds_the_summary(tmp_path, monkeypatch):
    from study.cli import main

    make_run(tmp_path, "fx")
    monkeypatch.chdir(tmp_path)
    assert main(["report", "fx"]) == 0
    assert (tmp_path / "reports" / "fx" / "summary.md").is_file()
    assert (tmp_path / "reports" / "fx" / "stages.csv").is_file()
    assert main(["report", "nope"]) == 2
