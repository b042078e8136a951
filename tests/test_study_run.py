"""The whole pipeline through the CLI: stages in child processes, records, exits. The session's dry run
is a user's own process (tests/conftest.py); the other studies call the CLI in the test's process
(tests/util.py run_cli), since their point is not the parent process. Bad input (exit 2) is catalogued
in test_bad_input.py; failed stages, kills and --resume after them (exit 3, 130) in test_faults.py."""
import json
import math

import pytest

from tests.util import records, results, run_cli, stage_rows

SEED = ["type", "epoch", "start", "loading", "duration", "value1", "value2"]


def test_dry_run_writes_every_output(tiny_dry_run):
    """The session's dry run (tests/conftest.py: the baseline and +workers=auto), read as files."""
    cwd, run, p = tiny_dry_run.cwd, tiny_dry_run.run, tiny_dry_run.proc
    assert p.returncode == 0, p.stderr[-3000:]
    rows = stage_rows(cwd, run)
    assert [(r["name"], r["status"]) for r in rows] == [("00-base", "ok"), ("01-workers_auto", "ok")]
    for r in rows:
        assert r["throughput"] > 0 and r["step_time_p50"] > 0 and r["steps_measured"] >= 1
        assert r["notes"]["checkpoint_verified"] is True
        assert r["versions"]["torch"].startswith("2.") and r["config_hash"]
    assert rows[0]["config_hash"] != rows[1]["config_hash"]  # the stages differ by their toggle
    rep = cwd / "reports" / run
    cfg = json.loads((rep / "config.json").read_text())
    assert cfg["config"]["model"] == "tiny"
    recs = records(cwd, run)
    assert list(recs[0].keys())[:7] == SEED
    types = {int(x["type"]) for x in recs}
    assert {0, 1, 2, 10, 11} <= types
    assert (rep / "stages.csv").is_file() and (rep / "stages.md").is_file()
    for r in rows:
        assert list((cwd / "profiles" / run / r["name"]).glob("events.out.tfevents.*")), r["name"]


@pytest.mark.slow
def test_resnet18_beats_chance_on_synthetic_cifar(tmp_path, synthetic_root):
    p = run_cli("--model", "resnet18", "--data-root", str(synthetic_root), "--run-name", "c", "--no-pictures", "--steps", "30",
                  "--subset", "2000", "--val-subset", "300", "--batch-size", "32", "--profile", "", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (row,) = stage_rows(tmp_path, "c")
    assert row["status"] == "ok", row["error"]
    assert row["metrics"]["top1"] > 0.3, row["metrics"]  # chance: 0.1; 30 steps reach about 0.65 here


@pytest.mark.slow
def test_segmentation_beats_all_background_miou(tmp_path, synthetic_root):
    import torch

    from study.core.config import RunConfig
    from study.data import open_datasets

    p = run_cli("--task", "segment", "--model", "tiny", "--image-size", "64", "--data-root", str(synthetic_root),
                  "--run-name", "s", "--epochs", "6", "--batch-size", "8", "--lr", "0.05", "--profile", "",
                  "--no-pictures", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (row,) = stage_rows(tmp_path, "s")
    assert row["status"] == "ok", row["error"]
    # all-background prediction: IoU(bg) = bg pixels / labelled pixels, IoU(pet) = 0
    val = open_datasets(RunConfig(task="segment", image_size=64, data_root=str(synthetic_root))).val
    masks = torch.stack([val[i][1] for i in range(len(val))])
    bg, fg = (masks == 0).sum().item(), (masks == 1).sum().item()
    all_background = bg / (bg + fg) / 2
    assert row["metrics"]["miou"] > all_background + 0.05, (row["metrics"], all_background)


@pytest.mark.slow  # four studies, three with a stage process (the studies in this process: not about it)
def test_resume_continues_the_step_count(tmp_path, synthetic_root):
    common = ["--model", "tiny", "--data-root", str(synthetic_root), "--run-name", "r", "--steps", "4",
              "--subset", "256", "--val-steps", "1", "--profile", "", "--warmup", "1",
              "--no-pictures"]
    assert run_cli(*common, "--epochs", "1", cwd=tmp_path).returncode == 0
    first = stage_rows(tmp_path, "r")[-1]
    assert first["steps_total"] == 4
    assert not (tmp_path / "reports" / "r" / "pictures.json").exists()  # --no-pictures: no pictures pass ran
    # Another measured setting: --resume would mix two settings in one ladder, so it is refused; a rerun
    # moves the earlier study aside and measures the stage anew from the start.
    p = run_cli(*common, "--epochs", "2", "--resume", cwd=tmp_path)
    assert p.returncode == 2 and "epochs 1 → 2" in p.stderr, p.stderr
    p = run_cli(*common, "--epochs", "2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "reports" / "r" / "previous" / "1" / "results.jsonl").is_file()
    second = stage_rows(tmp_path, "r")[-1]
    assert "resumed_from_step" not in second["notes"] and second["steps_total"] == 8
    assert second["config_hash"] != first["config_hash"]
    # same config again: the finished stage is skipped, not re-run
    measured = [r for r in results(tmp_path, "r") if r["kind"] in ("stage", "repeat")]
    assert run_cli(*common, "--epochs", "2", "--resume", cwd=tmp_path).returncode == 0
    assert [r for r in results(tmp_path, "r") if r["kind"] in ("stage", "repeat")] == measured


@pytest.mark.parametrize("command", [[], ["list"], ["report"]])
def test_help_explains_each_command(capsys, command):
    from study.cli import main  # in this process: --help is argument parsing alone

    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: study") and err == "", err
    if not command:  # the run options a user needs first
        for flag in ("--stack", "--repeats", "--profile", "--dry-run", "--resume", "--config", "--data-root"):
            assert flag in out
