"""Two runs side by side, stages matched by name."""
from __future__ import annotations

import json
import shutil

from study.report import build_report
from tests.report.helpers import make_run


def test_two_runs_are_compared_stage_by_stage(tmp_path, capsys):
    a = make_run(tmp_path, "a")
    b = make_run(tmp_path, "b", scale=2.0)
    shutil.rmtree(b / "stages" / "01-workers_2")
    (a / "config.json").write_text(json.dumps({"config": {"batch_size": 32}}))
    (b / "config.json").write_text(json.dumps({"config": {"batch_size": 64}}))
    written = build_report([a, b])
    cmp_md = tmp_path / "reports" / "compare-a-vs-b" / "summary.md"
    assert cmp_md in written
    text = cmp_md.read_text()
    assert "| 00-base | 1000.0 [950.0–1050.0] | 2000.0 [1900.0–2100.0] | 2.00× [1.81–2.21] |" in text
    assert "| 02-pin | skipped | skipped | – |" in text
    assert "| batch_size | 32 | 64 |" in text
    assert "| 00-base | a | 12.00 | 0.50 | 6.00 | 11.00 | 2.50 |" in text
    assert "- [a summary](../a/summary.md)" in text
    assert (cmp_md.parent / "throughput.png").exists() and (cmp_md.parent / "summary.html").exists()
    err = capsys.readouterr().err
    assert "a vs b" in err and "comparison: " in err
