"""What opening the datasets returns, and the steps every source (local folder, S3) shares: timing
each split's load, naming the classes, taking the seeded subsets, finding a dataset's local reader.

Its own module rather than ``study.data``'s ``__init__``: the S3 package, which ``__init__`` imports
on use, depends on these and must not depend back on its importer.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

from study.core.config import ConfigError, RunConfig
from study.core import catalog

if TYPE_CHECKING:  # torch is imported where used, so importing this module stays light
    from torch.utils.data import Dataset


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
    select = getattr(ds, "select", None)  # a sharded stream keeps the same samples and reads only theirs
    return select(idx) if select is not None else Subset(ds, idx)


def timed_load(split: str, load: Callable[[], Dataset]) -> tuple[Dataset, LoadRecord]:
    """Run ``load()`` and return its dataset with a LoadRecord of how long it took."""
    start = time.time()
    t0 = time.perf_counter()
    ds = load()
    seconds = time.perf_counter() - t0
    return ds, LoadRecord(split=split, start=start, seconds=seconds, count=len(ds))  # type: ignore[arg-type]


def reader(dataset: str) -> ModuleType:
    """The module whose ``open_split(cfg, train)`` reads ``dataset`` from a local folder."""
    return importlib.import_module(catalog.get(dataset).reader)


def open_bundle(cfg: RunConfig, load: Callable[[bool], Dataset]) -> DataBundle:
    """Open the train split, then the val split, with ``load(train)``, each timed as its LoadRecord;
    take the --subset/--val-subset. ConfigError when the two splits disagree on the classes."""
    train, rec_train = timed_load("train", lambda: load(True))
    val, rec_val = timed_load("val", lambda: load(False))
    classes = list(catalog.get(cfg.dataset).classes)
    if not classes:
        classes = list(train.classes)  # type: ignore[attr-defined]
        if list(val.classes) != classes:  # type: ignore[attr-defined]
            raise ConfigError(f"train and val class lists differ under {cfg.data_root} ({len(classes)} vs "
                              f"{len(val.classes)}); every class needs its folder in both splits: add the "  # type: ignore[attr-defined]
                              f"missing ones, or make the dataset again with ./prepare.sh")
    return DataBundle(train=take_subset(train, cfg.subset, cfg.seed), val=take_subset(val, cfg.val_subset, cfg.seed),
                      num_classes=len(classes), loads=[rec_train, rec_val], classes=classes)


# Items the preflight reads per split: the first, the last and some between. Reading every image of
# ImageNet there would take longer than the study; a bad file elsewhere fails its stage with its name.
SAMPLES_PER_SPLIT = 8


def sample_indices(n: int, k: int = SAMPLES_PER_SPLIT) -> list[int]:
    """Up to ``k`` indices spread evenly over ``range(n)``, always the first and the last."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def all_targets(ds: Any) -> list[int] | None:
    """Every label a dataset holds in memory (CIFAR, ImageFolder), through any Subset; None if it
    reads its labels per item."""
    from torch.utils.data import Subset

    if isinstance(ds, Subset):
        inner = all_targets(ds.dataset)
        return None if inner is None else [inner[i] for i in ds.indices]
    targets = getattr(ds, "targets", None)
    return list(targets) if targets is not None else None
