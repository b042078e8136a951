"""When a reader skips a release's check (a synthetic or UNVERIFIED CIFAR folder), results.jsonl
records it and the report says so; a verified copy says nothing."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from study.core.config import RunConfig
from study.data.integrity import accept, skipped_checks
from study.core.recorder import Recorder
from study.orchestrate import record_data_checks
from study.report.reading import RunData
from study.report.sections import header
from tests.util import results, run_cli


class Quiet:
    def print(self, *args, **kwargs) -> None:
        self.said = args


def test_the_skipped_check_is_a_row_and_a_line_of_the_report(tmp_path: Path, synthetic_root: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "cifar-10-batches-py", root / "cifar-10-batches-py")
    (root / "cifar-10-batches-py" / "SYNTHETIC").unlink()
    assert skipped_checks(str(root), "cifar10") == []  # unmarked: the MD5s are checked (and would refuse it)
    accept(root / "cifar-10-batches-py", "a test's copy")
    cfg = RunConfig(model="tiny", data_root=str(root), reports_root=str(tmp_path / "reports"), run_name="r")
    cfg.report_dir.mkdir(parents=True)
    console = Quiet()
    record_data_checks(cfg, Recorder(cfg.report_dir), console)
    assert "UNVERIFIED" in console.said[0]
    (row,) = results(tmp_path, "r")
    assert row["kind"] == "data" and "MD5 check skipped" in row["notes"]["skipped_checks"][0]
    text = " ".join(str(v) for kind, v in header(RunData(cfg.report_dir)).blocks if kind == "p")
    assert "Data: MD5 check skipped" in text and "UNVERIFIED" in text


def test_no_row_when_nothing_was_skipped(tmp_path: Path) -> None:
    cfg = RunConfig(model="tiny", dataset="cub200", data_root=str(tmp_path), reports_root=str(tmp_path / "reports"))
    cfg.report_dir.mkdir(parents=True)
    record_data_checks(cfg, Recorder(cfg.report_dir), Quiet())
    assert not (cfg.report_dir / "results.jsonl").exists()


@pytest.mark.slow  # a whole (tiny) study
def test_a_study_on_an_accepted_copy_says_so_in_its_summary(tmp_path: Path, synthetic_root: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "cifar-10-batches-py", root / "cifar-10-batches-py")
    (root / "cifar-10-batches-py" / "SYNTHETIC").unlink()
    refused = run_cli("--model", "tiny", "--data-root", str(root), "--profile", "", cwd=tmp_path)
    assert refused.returncode == 2 and f"./prepare.sh --root {root} --no-verify" in refused.stderr
    from study.data.prepare import main

    assert main(["--root", str(root), "--no-verify"]) == 0
    p = run_cli("--model", "tiny", "--data-root", str(root), "--profile", "", "--steps", "3", "--warmup", "1",
                "--subset", "64", "--val-subset", "16", "--batch-size", "8", "--val-steps", "1", "--no-pictures",
                "--run-name", "accepted", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    summary = (tmp_path / "reports" / "accepted" / "summary.md").read_text()
    assert "MD5 check skipped" in summary and "UNVERIFIED" in summary
