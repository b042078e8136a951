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
