"""A profiled dry run through the CLI: every pass leaves its files for every stage, and the report
holds the phase breakdown, MFU and the stage diff."""
from __future__ import annotations

import json
import pstats
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from study.profiling.trace_summary import find_traces, summarize
from tests.profiling.pyspy_probe import pyspy_can_attach
from tests.util import run_study, stage_rows


def _tb_plugin_parses(trace: Path, tmp: Path) -> bool:
    """The deprecated TensorBoard plugin's own loader reads the trace (skipped when not installed)."""
    try:
        from torch_tb_profiler import consts
        from torch_tb_profiler.profiler.data import RunProfileData
        from torch_tb_profiler.profiler.run_generator import RunGenerator
    except Exception:  # noqa: BLE001 — optional: the report never depends on it
        pytest.skip("torch-tb-profiler not importable")
    worker = consts.WORKER_PATTERN.match(trace.name).group(1)
    data = RunProfileData.parse(worker, None, str(trace), str(tmp))
    profile = RunGenerator(worker, None, data).generate_run_profile()
    return bool(profile.overview["steps"]["rows"])


@pytest.mark.slow
def test_profiled_run_of_the_baseline_and_workers(tmp_path, synthetic_root):
    attach, _ = pyspy_can_attach()
    # A dry run's sizes without its sanity check and checkpoint round trip, which profile nothing; a fixed
    # worker count (no sweep), so py-spy's --subprocesses has loader workers to follow. Two stages: each
    # more costs five processes (the scripted stage's own training is checked by test_all_toggles_train).
    p = run_study("--model", "tiny", "--data-root", str(synthetic_root), "--run-name", "pr", "--no-pictures",
                  "--steps", "6", "--warmup", "1", "--subset", "64", "--val-subset", "16", "--batch-size", "8",
                  "--val-steps", "1", "--profile-steps", "4", "--stack", "workers=2", "--profile", "all",
                  cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = stage_rows(tmp_path, "pr")
    assert [r["name"] for r in rows] == ["00-base", "01-workers_2"]
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert r["flops_per_sample"] > 0 and r["mfu"] > 0 and r["peak_flops_source"], r
        d = tmp_path / "profiles" / "pr" / r["name"]
        prof = r["profiles"]
        assert Path(tmp_path / prof["cprofile"]) == d / "cprofile.prof"
        assert pstats.Stats(str(d / "cprofile.prof")).total_tt > 0  # type: ignore[attr-defined]
        (trace,) = find_traces(d)
        s = summarize(trace)
        saved = json.loads((d / "trace_summary.json").read_text())  # what the report reads
        assert s["steps"] >= 1 and saved["steps"] == s["steps"]
        assert saved["categories_ms"] == pytest.approx(s["categories_ms"])  # of the trace kept, not a stale one
        # the trace's step windows are the loop's steps, measured by the loop's own clock
        assert s["step_ms_mean"] == pytest.approx(sum(saved["loop_step_ms"]) / len(saved["loop_step_ms"]), rel=0.10)
        if attach:  # the probe reached a process: the pass must have too
            assert "pyspy_error" not in prof, prof["pyspy_error"]
            ET.parse(d / "pyspy.svg")
            doc = json.loads((d / "pyspy.speedscope.json").read_text())
            assert sum(len(p["samples"]) for p in doc["profiles"]) > 0
        else:  # the reason is recorded instead, and the stage still ran
            assert prof["pyspy_error"], prof
        assert "train_step" in (d / "lines.txt").read_text()
    assert _tb_plugin_parses(find_traces(tmp_path / "profiles" / "pr" / "00-base")[0], tmp_path)

    md = (tmp_path / "reports" / "pr" / "summary.md").read_text()
    assert "## Where a step's time goes (timing pass)" in md
    for name in ("00-base", "01-workers_2"):
        assert f"\n| {name} | " in md  # a phase/MFU/category row per stage
    assert "## Model FLOPs utilization" in md
    assert "### 00-base → 01-workers_2" in md
    assert (tmp_path / "reports" / "pr" / "summary.html").is_file()
