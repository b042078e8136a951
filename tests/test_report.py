"""Report rendering from a fixed results.jsonl: ladder rows, summary.md/html, plots, comparisons."""
from __future__ import annotations

import json
import shutil
from pathlib import Path


from study.records import read_results
from study.report import build_report, display_frame, ladder_frame, write_ladder

FIXTURE = Path(__file__).parent / "fixtures" / "results.jsonl"


def make_run(root: Path, name: str, scale: float = 1.0) -> Path:
    """reports/<name>/ holding the fixture rows (throughputs × scale) and seed records for curves."""
    d = root / "reports" / name
    d.mkdir(parents=True)
    lines = []
    for line in FIXTURE.read_text().splitlines():
        row = json.loads(line)
        row["run"] = name
        for k in ("throughput", "throughput_ci_low", "throughput_ci_high"):
            if k in row:
                row[k] *= scale
        lines.append(json.dumps(row))
    (d / "results.jsonl").write_text("\n".join(lines) + "\n")
    for stage, losses in (("00-base", [2.3, 2.2, 2.1]), ("01-workers_2", [2.3, 2.1, 2.0])):
        sd = d / "stages" / stage
        sd.mkdir(parents=True)
        rows = ["type,epoch,start,loading,duration,value1,value2", "10,0,1.0,0.1,0.1,2000,"]
        rows += [f"2,0,{i}.0,0.001,0.03,{v},32" for i, v in enumerate(losses)]
        rows += ["0,0,1.0,0.01,0.1,2.2,"]
        (sd / "records-r0.csv").write_text("\n".join(rows) + "\n")
    return d


def test_ladder_rows_from_fixture():
    df = ladder_frame(read_results(FIXTURE))
    assert list(df.name) == ["00-base", "01-workers_2", "02-pin", "03-script", "04-amp"]
    disp = display_frame(df)
    assert list(disp["samples/s"]) == ["1000.0", "2000.0", "–", "2050.0", "–"]
    assert disp["±95% CI"][1] == "1900.0–2100.0"
    # speed-up with an interval from both CIs: 1900/1050 .. 2100/950
    assert disp["vs prev"][1] == "2.00× [1.81–2.21]"
    assert disp["vs base"][3].startswith("2.05×")
    # script vs workers: the interval contains 1.0, so it is flagged as noise
    assert disp["vs prev"][3].endswith("(noise)")
    assert disp["status"][2] == "skipped: pin needs an accelerator (no CUDA device here)"
    assert disp["status"][4].startswith("failed: RuntimeError")
    assert disp["metric"][0] == "top1 0.250"
    assert list(disp["procs×threads"])[:4] == ["1×2", "–", "–", "2×1"]  # no thread count recorded: –


def test_build_report_writes_summary_md_html_and_plots(tmp_path):
    run = make_run(tmp_path, "fx")
    write_ladder(run, print_table=False)
    (run / "worker_sweep.json").write_text(json.dumps([{"workers": 0, "samples_per_s": 900.0},
                                                       {"workers": 2, "samples_per_s": 1800.0}]))
    (written,) = build_report([run], print_tables=False)
    md = written.read_text()
    assert written == run / "summary.md"
    # ladder, phases (ms per step from t_* fields), MFU, metric, skipped reason
    assert "| 0 00-base | (baseline) | 1000.0 | 950.0–1050.0 |" in md
    assert "| 00-base | 12.00 | 0.50 | 6.00 | 11.00 | 2.50 | 32.00 | 37.5 |" in md
    assert "| 01-workers_2 | 16.00 MFLOP | 32.00 GFLOP/s | 320.00 GFLOP/s | 10.00 | estimate: 2 cores |" in md
    assert "pin needs an accelerator" in md and "expected scalar type BFloat16" in md
    for png in ("throughput.png", "phases.png", "curves.png", "worker_sweep.png"):
        assert (run / png).stat().st_size > 1000, png
        assert f"]({png})" in md
    html = (run / "summary.html").read_text()
    assert "<table" in html and "01-workers_2" in html and "<img src='phases.png'" in html


def test_report_reads_trace_and_cprofile_files_of_the_run(tmp_path):
    """Profile paths in results.jsonl lead to the trace categories, top ops, cProfile rows and the diff."""
    run = make_run(tmp_path, "fx")
    prof = tmp_path / "profiles" / "fx"
    rows = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
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
    (run / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (run / "config.json").write_text(json.dumps({"config": {"profiles_root": str(prof.parent)}}))
    build_report([run], print_tables=False)
    md = (run / "summary.md").read_text()
    assert "## Trace: step-time categories" in md
    assert "| 00-base | 1.50 | 12.00 | 0.50 | 14.00 | 14.00 | 14.00 | 0.44 | 3 |" in md
    assert "### 00-base → 01-workers_2" in md
    assert "| faster | op | aten::convolution | 8.000 | 3.000 | -5.000 |" in md
    assert "| appeared | op | prim::FusedConvBN |" in md and "| disappeared | op | aten::batch_norm |" in md
    assert "| to_tensor | functional.py:127 | 32 | 2.50 | 5.00 |" in md
    assert "pyspy_error: py-spy exited with code 1" in md


def test_two_runs_are_compared_stage_by_stage(tmp_path):
    a = make_run(tmp_path, "a")
    b = make_run(tmp_path, "b", scale=2.0)
    shutil.rmtree(b / "stages" / "01-workers_2")
    written = build_report([a, b], print_tables=False)
    cmp_md = tmp_path / "reports" / "compare-a-vs-b" / "summary.md"
    assert cmp_md in written
    text = cmp_md.read_text()
    assert "| 00-base | 1000.0 [950.0–1050.0] | 2000.0 [1900.0–2100.0] | 2.00× [1.81–2.21] |" in text
    assert "| 02-pin | skipped | skipped | – |" in text
    assert (cmp_md.parent / "throughput.png").exists() and (cmp_md.parent / "summary.html").exists()


def test_cli_report_command_builds_the_summary(tmp_path, monkeypatch):
    from study.cli import main

    make_run(tmp_path, "fx")
    monkeypatch.chdir(tmp_path)
    assert main(["report", "fx"]) == 0
    assert (tmp_path / "reports" / "fx" / "summary.md").is_file()
    assert main(["report", "nope"]) == 2


def test_report_summarizes_a_trace_when_its_summary_is_missing(tmp_path):
    import gzip

    run = make_run(tmp_path, "fx")
    trace = tmp_path / "rank0.1.pt.trace.json.gz"
    events = [{"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#2", "ts": 0, "dur": 1000, "pid": 1, "tid": 1},
              {"ph": "X", "cat": "cpu_op", "name": "aten::addmm", "ts": 100, "dur": 600, "pid": 1, "tid": 1}]
    with gzip.open(trace, "wt") as fh:
        json.dump({"traceEvents": events}, fh)
    rows = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    for row in rows:
        if row["kind"] == "stage" and row["name"] == "00-base":
            row["profiles"] = {"torch_trace": str(trace)}
    (run / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    build_report([run], print_tables=False)
    md = (run / "summary.md").read_text()
    assert "| 00-base | 0.60 | 0.40 | 1.00 | 1.00 | – | 0.03 | 1 |" in md  # cpu_exec, other, sums; no loop timer
    assert "| op | aten::addmm | 1 | 0.600 |" in md
