"""What a run leaves on disk: one stage's weights (no optimizer state) unless --keep-checkpoints, the
size stated on the console and in summary.md, and `study clean RUN`, which removes the checkpoints
and keeps results, reports and traces."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from study.runner.clean import clean, disk_line, human, prune_checkpoints, run_dir, usage, weights_stage
from study.cli import main
from study.core.config import ConfigError, RunConfig
from study.core.records import StageResult
from study.core.stage_spec import StageSpec
from tests.util import results, run_cli, stage_rows

SMALL = ["--model", "tiny", "--batch-size", "8", "--subset", "64", "--val-subset", "16", "--val-steps", "1",
         "--warmup", "1", "--steps", "4", "--checkpoint-every", "2", "--profile", ""]
SIZE = re.compile(r"\d+(\.\d)? (B|KiB|MiB|GiB)")


def checkpoint_keys(path: Path) -> set[str]:
    import torch

    return set(torch.load(path, map_location="cpu", weights_only=True))


# --- the pruning rule, on stand-in files ----------------------------------------------------------

def _specs(tmp_path: Path, names: list[str]) -> list[StageSpec]:
    cfg = RunConfig(model="tiny", run_name="r", reports_root=str(tmp_path / "reports"))
    specs = [StageSpec(index=i, name=n, stack=(), config=cfg) for i, n in enumerate(names)]
    for s in specs:
        s.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        s.checkpoint_path.write_bytes(b"x" * 1000)
    return specs


def _rows(**status: str) -> list[StageResult]:
    return [StageResult(run="r", stage=i, name=n.replace("_", "-"), status=s) for i, (n, s) in enumerate(status.items())]


def test_finished_stages_keep_the_last_ok_ladder_stage_weights_and_a_failed_stage_its_checkpoint(tmp_path):
    specs = _specs(tmp_path, ["00-base", "01-a", "02-b", "03-c", "ablate-no-a"])
    folder = specs[0].checkpoint_path.parent
    (folder / "02-b.tmp4242").write_bytes(b"half a save")
    rows = _rows(**{"00_base": "ok", "01_a": "ok", "02_b": "failed", "03_c": "ok", "ablate_no_a": "ok"})
    # three ladder stages after the baseline; the ablation stage is not one of them
    assert weights_stage(specs, 3, rows) is specs[3]
    prune_checkpoints(specs, 3, rows)
    assert sorted(p.name for p in folder.iterdir()) == ["02-b.pt", "03-c.pt"]


def test_a_stage_without_its_own_weights_does_not_cost_the_earlier_ones(tmp_path):
    specs = _specs(tmp_path, ["00-base", "01-a", "02-b"])
    specs[2].checkpoint_path.unlink()  # a trainer that saved nothing
    rows = _rows(**{"00_base": "ok", "01_a": "ok", "02_b": "ok"})
    prune_checkpoints(specs, 2, rows)
    assert [s.checkpoint_path.is_file() for s in specs] == [False, True, False]
    # while a stage trains (no row yet), its checkpoint and the last finished weights both stay
    specs[2].checkpoint_path.write_bytes(b"y")
    prune_checkpoints(specs, 2, rows[:2])
    assert [s.checkpoint_path.is_file() for s in specs] == [False, True, True]


# --- sizes and `study clean` on a stand-in run ---------------------------------------------------

def _fake_run(tmp_path: Path) -> Path:
    run = tmp_path / "reports" / "r"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "01-a.pt").write_bytes(b"w" * 3 * 2**20)
    (run / "checkpoints" / "02-b.pt").write_bytes(b"f" * 2**20)
    (run / "search" / "checkpoints").mkdir(parents=True)
    (run / "search" / "checkpoints" / "x.pt").write_bytes(b"s" * 2**10)
    (run / "results.jsonl").write_text(json.dumps({"run": "r", "stage": 1, "kind": "stage", "name": "01-a", "status": "ok"}) + "\n")
    (run / "summary.md").write_text("# study r\n")
    (run / "config.json").write_text(json.dumps({"config": {"profiles_root": str(tmp_path / "profiles")}}))
    (tmp_path / "profiles" / "r" / "01-a").mkdir(parents=True)
    (tmp_path / "profiles" / "r" / "01-a" / "t.pt.trace.json.gz").write_bytes(b"t" * 5 * 2**10)
    return run


def test_usage_counts_checkpoints_reports_and_traces_apart(tmp_path):
    run = _fake_run(tmp_path)
    u = usage(run)
    assert u.checkpoint_bytes == 4 * 2**20 + 2**10 and u.traces == 5 * 2**10
    assert u.reports == sum(p.stat().st_size for p in run.rglob("*") if p.is_file()) - u.checkpoint_bytes
    assert human(4 * 2**20 + 2**10) == "4.0 MiB" and human(512) == "512 B" and human(3 * 2**30) == "3.0 GiB"
    line = disk_line(run)
    assert "left on disk: 4.0 MiB" in line and "checkpoints 4.0 MiB (01-a.pt, 02-b.pt, x.pt)" in line
    assert f"{u.profile_dir}/ 5.0 KiB (traces)" in line and f"study clean {run}" in line


def test_clean_removes_the_checkpoints_and_keeps_results_reports_and_traces(tmp_path, capsys):
    run = _fake_run(tmp_path)
    assert main(["clean", str(run)]) == 0
    out = capsys.readouterr().out
    assert "removed 3 checkpoint file(s), 4.0 MiB" in out and "--resume trains 02-b from the start" in out
    assert not (run / "checkpoints").exists() and not (run / "search" / "checkpoints").exists()
    assert (run / "results.jsonl").is_file() and (run / "summary.md").is_file()
    assert (tmp_path / "profiles" / "r" / "01-a" / "t.pt.trace.json.gz").is_file()
    assert "nothing to remove" in clean(run)


def test_clean_of_an_unknown_run_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["clean", "nope", "--reports-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no study run 'nope'" in err
    (tmp_path / "plain").mkdir()
    with pytest.raises(ConfigError):
        run_dir(str(tmp_path / "plain"))  # a folder that is no run is never cleaned


# --- whole studies --------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_study_keeps_one_stage_weights_which_predict_uses_and_clean_removes(synthetic_root, tmp_path, capsys):
    from tests.trained import synthetic_picture

    p = run_cli(*SMALL, "--stack", "channels_last", "--data-root", str(synthetic_root), "--run-name", "k",
                  cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "reports" / "k"
    assert sorted(x.name for x in (run / "checkpoints").iterdir()) == ["01-channels_last.pt"]
    kept = run / "checkpoints" / "01-channels_last.pt"
    assert checkpoint_keys(kept) == {"model", "step", "epoch", "meta"}  # no optimizer state
    pics = json.loads((run / "pictures.json").read_text())
    assert pics["stage"] == "01-channels_last" and "error" not in pics, pics
    # the console's last word states the size and where
    last = [line for line in p.stderr.splitlines() if line.startswith("left on disk:")]
    assert last and SIZE.search(last[0]) and "01-channels_last.pt" in last[0] and "study clean k" in last[0], p.stderr[-2000:]
    md = (run / "summary.md").read_text()
    assert "## On disk" in md and "weights of 01-channels_last" in md and SIZE.search(md.split("## On disk")[1])

    img = synthetic_picture(tmp_path / "cat.png", 3)
    assert main(["predict", str(img), "--checkpoint", str(kept), "--out", str(tmp_path / "pred")]) == 0
    assert "cat.png: top-5" in capsys.readouterr().out

    assert main(["clean", str(run)]) == 0
    assert not (run / "checkpoints").exists()
    assert (run / "results.jsonl").is_file() and (run / "summary.md").is_file() and (run / "stages.csv").is_file()
    assert list((tmp_path / "profiles" / "k" / "00-base").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_keep_checkpoints_keeps_every_full_checkpoint_and_every_repeat_trains_in_full(synthetic_root, tmp_path):
    """--resume on a fresh run with two repeats: the second repeat trains its own steps (it must not
    resume from the end of the first)."""
    p = run_cli(*SMALL, "--stack", "channels_last", "--no-pictures", "--keep-checkpoints", "--repeats", "2",
                  "--resume", "--data-root", str(synthetic_root), "--run-name", "all", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "reports" / "all"
    assert sorted(x.name for x in (run / "checkpoints").iterdir()) == ["00-base.pt", "01-channels_last.pt"]
    for name in ("00-base.pt", "01-channels_last.pt"):
        assert {"optimizer", "step", "epoch", "steps_in_epoch"} <= checkpoint_keys(run / "checkpoints" / name)
    repeats = [r for r in results(tmp_path, "all") if r["kind"] == "repeat"]
    # 4 steps, 1 of them warm-up; a repeat that resumed from the end of the one before measured none
    # (a step still speeding up may join the warm-up: study.stage.timing_pass.extend_warmup)
    assert len(repeats) == 4 and all(r["status"] == "ok" and r["throughput"] > 0
                                     and r["steps_measured"] + r["notes"].get("warmup_extended", 0) == 3
                                     and "resumed_from_step" not in r["notes"] for r in repeats), repeats
    assert all(r["status"] == "ok" for r in stage_rows(tmp_path, "all"))
