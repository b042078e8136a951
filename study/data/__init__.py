"""Data layer: open the train/val datasets a RunConfig names, and time how long loading took.

One module per source/format: ``cifar`` (CIFAR-10 python batches), ``pets`` (Oxford-IIIT Pet
segmentation), ``imagefolder`` (ILSVRC-style folders), ``s3`` (the same files as objects under an
``s3://`` prefix), ``synthetic`` (writes small datasets in those real formats), ``prepare`` (the
``prepare.sh`` command line). Readers are torchvision's own; datasets are picklable and, where the
format allows, read files per item.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from study.config import ConfigError, RunConfig

if TYPE_CHECKING:  # torch is imported where used, so `import study.data.synthetic` stays light
    from torch.utils.data import Dataset

__all__ = ["LoadRecord", "DataBundle", "open_datasets", "take_subset"]


@dataclass
class LoadRecord:
    """Seed record type 10 (train) / 11 (validation): time to fetch/load one split."""

    split: str
    """"train" | "val"."""
    start: float
    """time.time() when loading began."""
    seconds: float
    """Duration of the load: listing / reading the index / unpickling batches / downloading."""
    count: int
    """Items in the split as loaded (before any --subset is taken)."""


@dataclass
class DataBundle:
    train: Dataset
    """Yields (image tensor CxHxW float, normalised; target)."""
    val: Dataset
    num_classes: int
    """classify: number of classes; segment: 2 (0 background, 1 pet; border pixels = 255, ignored)."""
    loads: list[LoadRecord]
    classes: list[str] = field(default_factory=list)
    """Class names, index order (segment: ["background", "pet"])."""


def take_subset(ds: Dataset, n: int, seed: int) -> Dataset:
    """At most ``n`` samples of ``ds`` (0: all), chosen by a seeded permutation, kept in index order."""
    import torch
    from torch.utils.data import Subset

    size = len(ds)  # type: ignore[arg-type]
    if n <= 0 or n >= size:
        return ds
    g = torch.Generator().manual_seed(seed)
    idx = sorted(torch.randperm(size, generator=g)[:n].tolist())
    return Subset(ds, idx)


def timed_load(split: str, load: Callable[[], Dataset]) -> tuple[Dataset, LoadRecord]:
    """Run ``load()`` and return its dataset with a LoadRecord of how long it took."""
    start = time.time()
    t0 = time.perf_counter()
    ds = load()
    seconds = time.perf_counter() - t0
    return ds, LoadRecord(split=split, start=start, seconds=seconds, count=len(ds))  # type: ignore[arg-type]


def open_datasets(cfg: RunConfig) -> DataBundle:
    """Train and validation datasets for ``cfg`` (local folder or s3:// prefix).

    Raises ConfigError (one line: what was expected where, and what to run) when the data is missing
    or fails its integrity check.
    """
    if cfg.is_s3:
        try:
            s3 = importlib.import_module("study.data.s3")  # written separately; imported only when used
        except ModuleNotFoundError as e:
            if e.name != "study.data.s3":
                raise
            raise ConfigError(f"reading {cfg.data_root} needs study/data/s3.py, which is missing") from None
        return s3.open_datasets(cfg)

    if cfg.dataset == "cifar10":
        from study.data import cifar as mod
    elif cfg.dataset == "oxford-pets":
        from study.data import pets as mod  # type: ignore[no-redef]
    elif cfg.dataset == "imagefolder":
        from study.data import imagefolder as mod  # type: ignore[no-redef]
    else:  # RunConfig validates this already
        raise ConfigError(f"unknown dataset {cfg.dataset!r}")

    train, rec_train = timed_load("train", lambda: mod.open_split(cfg, True))
    val, rec_val = timed_load("val", lambda: mod.open_split(cfg, False))
    if cfg.dataset == "oxford-pets":
        from study.data.pets import CLASSES

        classes = list(CLASSES)
    else:
        classes = list(train.classes)  # type: ignore[attr-defined]
        if list(val.classes) != classes:  # type: ignore[attr-defined]
            raise ConfigError(f"train and val class lists differ under {cfg.data_root} ({len(classes)} vs {len(val.classes)})")  # type: ignore[attr-defined]
    return DataBundle(
        train=take_subset(train, cfg.subset, cfg.seed),
        val=take_subset(val, cfg.val_subset, cfg.seed),
        num_classes=len(classes),
        loads=[rec_train, rec_val],
        classes=classes,
    )
