"""Values that pass their type but make no sense, and records that meet damage: refused or skipped by
name, never a traceback."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from study.cli import main
from study.core.config import ConfigError, RunConfig
from study.core.config_files import load_config_file
from study.core.records import StageResult, read_results
from study.core.recorder import append_jsonl


@pytest.mark.parametrize("changes, words", [
    (dict(lr=float("nan")), "--lr must be a finite positive"),
    (dict(lr=float("inf")), "--lr must be a finite positive"),
    (dict(momentum=-0.1), "--momentum must be in [0, 1)"),
    (dict(momentum=1.0), "--momentum must be in [0, 1)"),
    (dict(weight_decay=-1e-4), "--weight-decay must be"),
    (dict(device="gpu"), "--device 'gpu'"),
    (dict(device="cuda:x"), "--device 'cuda:x'"),
    (dict(run_name="r" * 300), "--run-name is 300 bytes"),
])
def test_values_that_make_no_sense_are_refused(changes, words):
    with pytest.raises(ConfigError) as e:
        RunConfig(model="tiny", **changes)
    assert words in str(e.value)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_devices_as_torch_spells_them_pass(device):
    assert RunConfig(model="tiny", device=device).device == device


def test_a_config_file_in_another_encoding_is_one_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_bytes("run_name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config_file(str(f))


def test_lines_that_hold_no_row_are_skipped_and_named(tmp_path):
    path = tmp_path / "results.jsonl"
    append_jsonl(path, StageResult(run="r", stage=0, name="00-base", throughput=5.0))
    with open(path, "a") as fh:
        fh.write("null\n[1, 2]\n{not json\n\"text\"\n")
    append_jsonl(path, StageResult(run="r", stage=1, name="01-x"))
    skipped: list[str] = []
    rows = read_results(path, skipped)
    assert [r.name for r in rows] == ["00-base", "01-x"]
    assert [s.split(":")[0] for s in skipped] == ["line 2", "line 3", "line 4", "line 5"]


def test_report_of_a_damaged_or_empty_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "reports" / "r"
    run.mkdir(parents=True)
    (run / "results.jsonl").write_text("null\n\n")
    assert main(["report", "r"]) == 2
    assert "holds no finished stage" in capsys.readouterr().err
    append_jsonl(run / "results.jsonl", StageResult(run="r", stage=0, name="00-base", status="ok", throughput=10.0,
                                                    throughput_ci_low=9.0, throughput_ci_high=11.0))
    assert main(["report", "r"]) == 0
    assert "1 line(s) that hold no row" in (run / "summary.md").read_text()


def test_a_diverged_stage_is_flagged_and_never_a_gain():
    from study.advice import ladder_measurements, refutations
    from study.report.ladder import checks

    base = StageResult(run="r", stage=0, name="00-base", status="ok", throughput=100.0, throughput_ci_low=98.0,
                       throughput_ci_high=102.0, steps_measured=10, first_loss=2.3, final_loss=1.9)
    fast = StageResult(run="r", stage=1, name="01-amp", stack=["amp"], status="ok", throughput=300.0,
                       throughput_ci_low=290.0, throughput_ci_high=310.0, steps_measured=10, first_loss=2.3,
                       final_loss=float("nan"), diverged_step=4)
    flagged = checks(fast)
    assert "diverged" in flagged and "step 4" in flagged and "--lr" in flagged  # what, from when, what to change
    (m,) = ladder_measurements([base, fast])
    assert m.ratio > 2.9 and m.low > 1.0 and not m.gained and "diverged" in m.where
    assert refutations([m])["amp"] is m  # the advice marks amp as measured without gain


@pytest.mark.slow  # a whole study: its stage in a child process
def test_a_study_whose_loss_explodes_records_the_step_and_flags_it(tmp_path, synthetic_root, monkeypatch):
    """A real stage at an lr that blows the loss up: its row says from which step, the ladder flags it.
    The study runs in this process (its stage in a child, as always): the test is not about the parent."""
    from study.cli import main
    from tests.util import stage_rows

    monkeypatch.chdir(tmp_path)
    code = main(["--model", "tiny", "--data-root", str(synthetic_root), "--run-name", "nan", "--lr", "1e6",
                 "--steps", "8", "--warmup", "1", "--subset", "64", "--val-subset", "16", "--batch-size", "8",
                 "--val-steps", "1", "--threads", "1", "--profile", "", "--no-pictures"])
    assert code == 0
    (row,) = stage_rows(tmp_path, "nan")
    assert row["status"] == "ok" and 0 <= row["diverged_step"] < 8, row["diverged_step"]
    flagged = [line for line in (tmp_path / "reports" / "nan" / "stages.md").read_text().splitlines() if "diverged" in line]
    assert flagged and f"step {row['diverged_step']}" in flagged[0]


def test_one_study_writes_a_run_folder_at_a_time(tmp_path, synthetic_root, capsys):
    """A second study on a folder another one holds exits 2 naming the holder, before any stage."""
    import os
    import subprocess
    import sys

    from study.runner.folder import RunFolderLock

    run = tmp_path / "reports" / "r"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from study.runner.folder import RunFolderLock; "
        f"RunFolderLock(Path({str(run)!r})).acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "held"
        args = ["--model", "tiny", "--data-root", str(synthetic_root), "--run-name", "r", "--steps", "3",
                "--warmup", "1", "--subset", "64", "--batch-size", "8", "--profile", "", "--no-pictures",
                "--reports-root", str(tmp_path / "reports"), "--profiles-root", str(tmp_path / "profiles")]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"another study (process {holder.pid}) is writing" in err and "--run-name" in err
        assert not (run / "results.jsonl").exists()  # refused before anything was written
    finally:
        holder.kill()
        holder.wait()
    lock = RunFolderLock(run)  # the holder died: its lock went with it
    lock.acquire()
    assert (run / ".lock").read_text().strip() == str(os.getpid())
    lock.release()


def test_numpy_integer_labels_are_classes():
    import numpy as np
    import torch

    from study.runner.preflight import check_sample

    cfg = RunConfig(model="tiny")
    check_sample(cfg, "train", 0, (torch.zeros(3, 8, 8), np.int64(3)), 10)  # accepted
    with pytest.raises(ConfigError, match="outside the 10 classes"):
        check_sample(cfg, "train", 0, (torch.zeros(3, 8, 8), np.int64(10)), 10)
    with pytest.raises(ConfigError, match="outside the 10 classes"):
        check_sample(cfg, "train", 0, (torch.zeros(3, 8, 8), True), 10)


def _folder_with_a_study(root: Path, **options) -> Path:
    cfg = RunConfig(model="tiny", run_name="r", reports_root=str(root), **options)
    run = cfg.report_dir
    run.mkdir(parents=True)
    append_jsonl(run / "results.jsonl", StageResult(run="r", stage=-1, name="run", kind="run",
                                                   notes={"config": cfg.to_dict(), "stages": ["00-base"]}))
    append_jsonl(run / "results.jsonl", StageResult(run="r", stage=0, name="00-base", kind="stage", throughput=5.0))
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "00-base.pt").write_bytes(b"weights")
    (run / "summary.md").write_text("earlier study")
    (run / ".lock").write_text("1\n")
    return run


def test_resume_into_a_folder_that_measured_other_settings_is_refused(tmp_path):
    from study.runner.folder import check_resume_identity

    _folder_with_a_study(tmp_path, lr=0.1, batch_size=32)
    with pytest.raises(ConfigError) as e:
        check_resume_identity(RunConfig(model="tiny", run_name="r", reports_root=str(tmp_path), lr=0.01,
                                        batch_size=32, resume=True))
    assert "lr 0.1 → 0.01" in str(e.value)  # the setting that differs, old → new
    assert "rerun without --resume" in str(e.value) and "--run-name" in str(e.value)
    # the same settings with a longer stack, and options that measure nothing, continue the study
    check_resume_identity(RunConfig(model="tiny", run_name="r", reports_root=str(tmp_path), lr=0.1, batch_size=32,
                                    resume=True, stack=("workers=2",), profile=("cprofile",)))


def test_a_rerun_moves_the_earlier_study_aside_and_the_report_never_mixes_them(tmp_path):
    from study.report.reading import RunData
    from study.runner.folder import archive_previous

    run = _folder_with_a_study(tmp_path)
    cfg = RunConfig(model="tiny", run_name="r", reports_root=str(tmp_path))
    assert archive_previous(cfg.replace(resume=True)) is None  # --resume continues in place
    assert archive_previous(cfg) == run / "previous" / "1"
    assert (run / "previous" / "1" / "results.jsonl").is_file()
    assert (run / "previous" / "1" / "summary.md").read_text() == "earlier study"
    assert not (run / "checkpoints").exists() and (run / ".lock").exists()
    assert RunData(run).stages == []  # the new study starts from an empty ladder
    (run / "results.jsonl").write_text((run / "previous" / "1" / "results.jsonl").read_text())
    assert archive_previous(cfg) == run / "previous" / "2"


def test_the_ladder_is_the_one_the_latest_run_row_lists(tmp_path):
    from study.report.reading import stage_rows

    rows = [StageResult(run="r", stage=-1, name="run", kind="run", notes={"stages": ["00-base", "01-amp"]}),
            StageResult(run="r", stage=0, name="00-base", kind="stage"),
            StageResult(run="r", stage=1, name="01-amp", kind="stage"),
            StageResult(run="r", stage=-1, name="run", kind="run", notes={"stages": ["00-base", "01-workers_2"]}),
            StageResult(run="r", stage=1, name="01-workers_2", kind="stage")]
    assert [r.name for r in stage_rows(rows)] == ["00-base", "01-workers_2"]  # a --resume with another stack
    assert [r.name for r in stage_rows(rows[1:3])] == ["00-base", "01-amp"]  # rows before run rows listed stages


def test_a_resumed_stage_that_measures_no_step_is_never_ok(tmp_path, synthetic_root):
    from study.train.checkpoints import save_checkpoint
    from study.stage.timing_pass import timing_pass
    from tests.optimizations.helpers import make_session, tiny_config

    cfg = tiny_config(synthetic_root, tmp_path, resume=True, steps=3)
    done = make_session(cfg)
    done.state.step, done.state.epoch, done.state.steps_in_epoch = 3, 1, 0  # its one epoch trained
    save_checkpoint(done.checkpoint_path, done.state)
    row = timing_pass(make_session(cfg), 0)
    assert row.status == "failed" and row.steps_measured == 0
    assert "measured no step" in row.error and "resumed from its checkpoint" in row.error


def test_a_checkpoint_of_another_stage_configuration_is_not_resumed(tmp_path, synthetic_root):
    from study.train.checkpoints import save_checkpoint
    from study.stage.timing_pass import timing_pass
    from tests.optimizations.helpers import make_session, tiny_config

    cfg = tiny_config(synthetic_root, tmp_path, resume=True, steps=3)
    other = make_session(cfg.replace(lr=0.5))  # same stage name, another measured setting
    other.state.step, other.state.epoch, other.state.steps_in_epoch = 3, 1, 0
    save_checkpoint(other.checkpoint_path, other.state)
    row = timing_pass(make_session(cfg), 0)
    assert row.status == "ok" and "resumed_from_step" not in row.notes
    assert row.steps_measured + row.notes.get("warmup_extended", 0) == 2  # its two steps after warm-up, trained afresh


def test_a_full_disk_leaves_every_row_before_whole_and_no_temp_file(tmp_path, monkeypatch):
    import errno
    import os

    from study.core import records
    from study.core.records import write_atomic

    path = tmp_path / "results.jsonl"
    append_jsonl(path, StageResult(run="r", stage=0, name="00-base", kind="stage"))
    before = path.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):  # the disk fills in the middle of the line
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(records.os, "write", half_then_full)
    with pytest.raises(OSError) as e:
        append_jsonl(path, StageResult(run="r", stage=1, name="01-amp", kind="stage"))
    monkeypatch.undo()
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    assert path.read_bytes() == before  # the half line is cut, the rows before are whole

    target = tmp_path / "summary.md"
    target.write_text("the report before")
    monkeypatch.setattr(Path, "write_text", lambda self, text: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OSError) as e:
        write_atomic(target, "the new report")
    monkeypatch.undo()
    assert e.value.filename == str(target) and target.read_text() == "the report before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl", "summary.md"]  # no temp file


def test_a_full_disk_is_one_line_naming_the_file_and_exit_3(monkeypatch, capsys):
    import errno

    from study import orchestrate

    def full(cfg):
        raise OSError(errno.ENOSPC, "No space left on device", "reports/r/results.jsonl")

    monkeypatch.setattr(orchestrate, "run_study", full)
    assert main(["--model", "tiny", "--run-name", "r"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the disk is full" in err[0] and "reports/r/results.jsonl" in err[0] and "--resume" in err[0]


def test_a_checkpoint_the_disk_cannot_hold_leaves_no_temp_file_and_names_the_file(tmp_path, monkeypatch):
    import errno

    from study.train import checkpoints

    def full(state, f):
        Path(f).write_bytes(b"PK\x03\x04 half an archive")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints.torch, "save", full)
    target = tmp_path / "checkpoints" / "01-amp.pt"
    with pytest.raises(OSError, match=f"cannot write the checkpoint {target}"):
        checkpoints.save_atomic({"model": {}}, target)
    monkeypatch.undo()
    assert list(target.parent.iterdir()) == []


def test_an_imagefolder_with_link_loops_lists_each_picture_once(tmp_path):
    import os

    from PIL import Image

    from study.data.imagefolder import ImageFiles

    train = tmp_path / "imagenet" / "train"
    outside = tmp_path / "elsewhere"
    for folder, n in ((train / "a", 2), (train / "b", 2), (outside, 1)):
        folder.mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(folder / f"x{i}.png")
    os.symlink(train / "a", train / "a" / "loop")  # a folder that holds itself
    os.symlink(train, train / "b" / "up")  # a link back to the top: every class again, under b
    os.symlink(train / "b" / "x0.png", train / "b" / "same.png")  # one picture under two names
    os.symlink(outside, train / "b" / "linked-in")  # pictures linked in from outside (prepare.sh does so)
    ds = ImageFiles(str(train))
    files = sorted(os.path.relpath(os.path.realpath(p), tmp_path) for p, _ in ds.samples)
    assert files == ["elsewhere/x0.png", "imagenet/train/a/x0.png", "imagenet/train/a/x1.png",
                     "imagenet/train/b/x0.png", "imagenet/train/b/x1.png"]
    assert [c for _, c in ds.samples].count(ds.class_to_idx["a"]) == 2


def test_a_picture_a_pets_split_lists_but_the_disk_lacks_is_named_before_any_stage(tmp_path, synthetic_root):
    import shutil

    from study.data import open_datasets

    shutil.copytree(synthetic_root / "oxford-iiit-pet", tmp_path / "oxford-iiit-pet")
    first = (tmp_path / "oxford-iiit-pet" / "annotations" / "trainval.txt").read_text().split()[0]
    (tmp_path / "oxford-iiit-pet" / "images" / f"{first}.jpg").unlink()
    with pytest.raises(ConfigError) as e:
        open_datasets(RunConfig(model="tiny", task="segment", data_root=str(tmp_path)))
    message = str(e.value)
    assert "annotations/trainval.txt" in message and str(tmp_path / "oxford-iiit-pet") in message and "1 file" in message
    assert f"images/{first}.jpg" in message and f"./prepare.sh --root {tmp_path} --pets" in message
