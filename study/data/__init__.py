"""Data layer: open the train/val datasets a RunConfig names, and time how long loading took.

``catalog`` lists the datasets (folder, reader, title, default size). One module per source/format:
``cifar`` (CIFAR-10 python batches), ``cifar100`` (CIFAR-100's), ``cub`` (CUB-200-2011 from its index
files), ``pets`` (Oxford-IIIT Pet segmentation), ``imagefolder`` (ILSVRC-style folders), ``s3`` (the
same files as objects under an ``s3://`` prefix; needs boto3), ``synthetic`` and its ``synthetic_*``
siblings (write small datasets in those real formats), ``prepare`` and ``prepare_imagenet`` (the
``prepare.sh`` command line), ``integrity`` (the checks a folder skips, and the hints that say what to
run). ``bundle`` holds what every source returns and shares. Readers are torchvision's own; datasets
are picklable and, where the format allows, read files per item.
"""
from __future__ import annotations

from types import ModuleType

from study.core.config import ConfigError, RunConfig, is_reference
from study.data.bundle import DataBundle, LoadRecord, open_bundle, reader, take_subset, timed_load

__all__ = ["LoadRecord", "DataBundle", "open_datasets", "s3_package", "take_subset", "timed_load"]


def s3_package(purpose: str) -> ModuleType:
    """``study.data.s3``, imported on first use: boto3 is an optional dependency, and a missing one is a
    ConfigError saying so (``purpose``: what needed it, e.g. "reading s3://b/p")."""
    try:
        import study.data.s3 as s3
    except ModuleNotFoundError as e:
        if not e.name or e.name.split(".")[0] == "study":
            raise
        raise ConfigError(f"{purpose} needs the {e.name} package, which is not installed (pip install boto3)") from None
    return s3


def open_datasets(cfg: RunConfig) -> DataBundle:
    """Train and validation datasets for ``cfg`` (local folder or s3:// prefix).

    Raises ConfigError (one line: what was expected where, and what to run) when the data is missing
    or fails its integrity check. A reference (FILE.py:FUNC) is the user's own dataset function.
    """
    if is_reference(cfg.dataset):  # the user's function (study.data.plugin); --data-root is its business
        from study.data.plugin import open_plugin

        return open_plugin(cfg)
    if cfg.is_s3:
        return s3_package(f"reading {cfg.data_root}").open_datasets(cfg)
    mod = reader(cfg.dataset)
    return open_bundle(cfg, lambda train: mod.open_split(cfg, train))
