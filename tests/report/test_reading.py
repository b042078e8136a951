"""Reading a run: stage rows, seed-record losses, profile paths wherever the study ran."""
from __future__ import annotations

import json

from study.report import RunData
from tests.report.helpers import make_run, read_rows, write_rows


def test_latest_aggregate_row_per_stage_in_ladder_order(tmp_path):
    run_dir = make_run(tmp_path, "fx")
    rows = read_rows(run_dir)
    rerun = dict(next(r for r in rows if r["kind"] == "stage" and r["name"] == "00-base"), throughput=1234.0)
    write_rows(run_dir, [*rows, rerun])  # a resumed study appends the stage again
    run = RunData(run_dir)
    assert [r.name for r in run.stages] == ["00-base", "01-workers_2", "02-pin", "03-script", "04-amp"]
    assert run.stages[0].throughput == 1234.0
    assert [r.name for r in run.ok] == ["00-base", "01-workers_2", "03-script"]


def test_losses_come_from_per_batch_seed_records(tmp_path):
    run = RunData(make_run(tmp_path, "fx"))
    assert run.losses(run.stages[0]) == [2.3, 2.2, 2.1]  # not the epoch row (type 0) nor the download row
    assert run.losses(run.stages[2]) == []


def test_profile_paths_resolve_under_the_profiles_root_when_recorded_elsewhere(tmp_path):
    run_dir = make_run(tmp_path, "fx")
    moved = tmp_path / "elsewhere" / "profiles"
    (moved / "fx" / "00-base").mkdir(parents=True)
    (moved / "fx" / "00-base" / "cprofile_top.json").write_text(json.dumps({"steps": 2, "by_tottime": []}))
    rows = read_rows(run_dir)
    for row in rows:
        if row["kind"] == "stage" and row["name"] == "00-base":
            row["profiles"] = {"cprofile_json": "/gone/profiles/fx/00-base/cprofile_top.json"}
    write_rows(run_dir, rows)
    (run_dir / "config.json").write_text(json.dumps({"config": {"profiles_root": str(moved)}}))
    run = RunData(run_dir)
    assert run.cprofile(run.stages[0]) == {"steps": 2, "by_tottime": []}
    assert run.path(run.stages[0], "torch_trace") is None
