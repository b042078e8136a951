"""Every hint a refusal gives is a command that works: apply what it says and the same check passes.
A dry run trains one epoch, so its hints never say --epochs; a small split is never told --subset."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from study.core.config import ConfigError, RunConfig
from study.data import open_datasets
from study.data.synthetic import write_imagefolder, write_pets
from study.orchestrate import check_measured_steps


def refusal(cfg: RunConfig, root: Path) -> str:
    b = open_datasets(cfg)
    with pytest.raises(ConfigError) as e:
        check_measured_steps(cfg, len(b.train), b.loads[0].count)
    return str(e.value)


def suggestions(msg: str) -> list[dict]:
    """Each "raise/lower --flag to N" of a message, as a change to the config."""
    return [{flag.replace("-", "_"): int(n)} for flag, n in re.findall(r"--([a-z-]+) to (\d+)", msg)]


def passes(cfg: RunConfig, change: dict) -> bool:
    cfg = RunConfig(**{**cfg.to_dict(), **change})
    b = open_datasets(cfg)
    check_measured_steps(cfg, len(b.train), b.loads[0].count)
    return True


def test_thirty_imagefolder_images_with_the_default_batch(tmp_path: Path) -> None:
    write_imagefolder(tmp_path, n_classes=3, n_train_per_class=10, n_val_per_class=2)
    cfg = RunConfig(dataset="imagefolder", model="tiny", data_root=str(tmp_path), image_size=32)
    msg = refusal(cfg, tmp_path)
    assert "30 training samples" in msg and "32" in msg and "--subset" not in msg
    assert suggestions(msg) == [{"batch_size": 10}] and passes(cfg, {"batch_size": 10})  # 3 steps, 1 measured


def test_segmentation_dry_run_on_a_small_set(tmp_path: Path) -> None:
    write_pets(tmp_path, n_trainval=8, n_test=4, size=48)
    cfg = RunConfig(task="segment", model="tiny", data_root=str(tmp_path), dry_run=True)
    msg = refusal(cfg, tmp_path)
    assert "as every dry run" in msg and "--epochs" not in msg and "--subset" not in msg
    fixes = suggestions(msg)
    assert fixes == [{"warmup": 1}, {"batch_size": 2}]
    assert all(passes(cfg, f) for f in fixes)


def test_subset_is_offered_only_when_the_split_holds_more(tmp_path: Path) -> None:
    write_imagefolder(tmp_path, n_classes=4, n_train_per_class=20, n_val_per_class=2)
    cfg = RunConfig(dataset="imagefolder", model="tiny", data_root=str(tmp_path), image_size=32, subset=40,
                    batch_size=16, epochs=1)
    msg = refusal(cfg, tmp_path)
    assert "raise --subset (the split holds 80)" in msg and "raise --epochs to 2" in msg
    assert all(passes(cfg, f) for f in suggestions(msg))
    assert passes(cfg, {"subset": 80})
