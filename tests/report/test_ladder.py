"""Ladder rows from a fixed results.jsonl: speed-ups with intervals, skipped and failed stages."""
from __future__ import annotations

import csv

from study.core.records import read_results
from study.report import display_frame, ladder_frame, write_ladder
from tests.report.helpers import FIXTURE, make_run


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


def test_write_ladder_writes_raw_csv_and_the_human_table(tmp_path):
    run = make_run(tmp_path, "fx")
    df = write_ladder(run, print_table=False)
    with open(run / "stages.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(df.columns)
    assert [r["name"] for r in rows] == list(df.name)
    assert rows[1]["samples_per_s"] == "2000.0" and rows[2]["samples_per_s"] == ""  # skipped: empty, not a dash
    md = (run / "stages.md").read_text()
    assert md.startswith("# Ladder: fx\n")
    assert "| stage | toggles | samples/s | ±95% CI | vs prev | vs base |" in md
    assert "| 1 01-workers_2 | workers=2 | 2000.0 | 1900.0–2100.0 | 2.00× [1.81–2.21] | 2.00× [1.81–2.21] |" in md


def test_write_ladder_prints_the_table(tmp_path, capsys):
    run = make_run(tmp_path, "fx")
    write_ladder(run)
    out = capsys.readouterr().out
    assert "study fx" in out and "01-workers_2" in out and "2000.0" in out
    # the reasons of the stages that did not run follow the table, each on one line, not wrapped in a cell
    assert "  02-pin skipped: pin needs an accelerator (no CUDA device here)\n" in out
    assert "  04-amp failed: RuntimeError" in out
    assert "skipped: pin" not in out.split("02-pin skipped")[0]
