"""The Python API: study.run returns what the run wrote, study.load reads the same back, and what a
child process could never reach is refused before anything starts."""
from __future__ import annotations

from pathlib import Path

import pytest

import study
from study.core.config import ConfigError


def test_run_and_load_round_trip(synthetic_root: Path, tmp_path: Path) -> None:
    result = study.run(model="tiny", data_root=str(synthetic_root), stack=["channels_last"], steps=4, warmup=1,
                       subset=64, val_subset=16, batch_size=8, val_steps=1, threads=1, profile="", no_pictures=True,
                       run_name="api", reports_root=str(tmp_path / "reports"), profiles_root=str(tmp_path / "profiles"))
    assert result.exit_code == 0 and result.path == tmp_path / "reports" / "api"
    df = result.frame()
    assert list(df["name"]) == ["00-base", "01-channels_last"]
    assert (df["status"] == "ok").all() and (df["samples_per_s"] > 0).all()
    assert df["speedup_vs_base"].iloc[0] == 1.0
    assert "timed once" in result.verdict, result.verdict  # one run a stage: no interval, nothing proven
    again = study.load(tmp_path / "reports" / "api")
    assert again.frame().equals(df) and again.verdict == result.verdict
    assert study.load(tmp_path / "reports" / "api" / "results.jsonl").path == result.path


def test_what_cannot_reach_a_child_process_is_refused_before_it_starts(tmp_path: Path) -> None:
    def build(num_classes):  # defined here, as in a notebook cell
        raise AssertionError("never called")

    with pytest.raises(ConfigError, match=r"\.py file"):
        study.run(model=build, reports_root=str(tmp_path))
    with pytest.raises(ConfigError, match="unknown option.*batchsize"):
        study.run(batchsize=8)
    with pytest.raises(ConfigError, match="no results.jsonl"):
        study.load(tmp_path / "nothing")
    assert not any(tmp_path.iterdir())
