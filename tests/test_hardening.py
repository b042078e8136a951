"""Values that pass their type but make no sense, and records that meet damage: refused or skipped by
name, never a traceback."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from study.cli import main
from study.config import ConfigError, RunConfig
from study.config_files import load_config_file
from study.records import StageResult, append_jsonl, read_results


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
    assert "diverged: loss not finite from step 4" in checks(fast) and "lower --lr" in checks(fast)
    (m,) = ladder_measurements([base, fast])
    assert m.ratio > 2.9 and m.low > 1.0 and not m.gained and "diverged" in m.where
    assert refutations([m])["amp"] is m  # the advice marks amp as measured without gain


def test_a_study_whose_loss_explodes_records_the_step_and_flags_it(tmp_path, synthetic_root):
    """A real stage at an lr that blows the loss up: its row says from which step, the ladder flags it."""
    from tests.util import run_study, stage_rows

    p = run_study("--model", "tiny", "--data-root", str(synthetic_root), "--run-name", "nan", "--lr", "1e6",
                  "--steps", "8", "--warmup", "1", "--subset", "64", "--val-subset", "16", "--batch-size", "8",
                  "--val-steps", "1", "--threads", "1", "--profile", "", "--no-pictures", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (row,) = stage_rows(tmp_path, "nan")
    assert row["status"] == "ok" and 0 <= row["diverged_step"] < 8, row["diverged_step"]
    assert f"diverged: loss not finite from step {row['diverged_step']}" in (tmp_path / "reports" / "nan" / "stages.md").read_text()


def test_one_study_writes_a_run_folder_at_a_time(tmp_path, synthetic_root, capsys):
    """A second study on a folder another one holds exits 2 naming the holder, before any stage."""
    import os
    import subprocess
    import sys

    from study.orchestrate import RunFolderLock

    run = tmp_path / "reports" / "r"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from study.orchestrate import RunFolderLock; "
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

    from study.preflight import check_sample

    cfg = RunConfig(model="tiny")
    check_sample(cfg, "train", 0, (torch.zeros(3, 8, 8), np.int64(3)), 10)  # accepted
    with pytest.raises(ConfigError, match="outside the 10 classes"):
        check_sample(cfg, "train", 0, (torch.zeros(3, 8, 8), np.int64(10)), 10)
    with pytest.raises(ConfigError, match="outside the 10 classes"):
        check_sample(cfg, "train", 0, (torch.zeros(3, 8, 8), True), 10)
