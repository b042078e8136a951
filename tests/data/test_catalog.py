"""The dataset table: every row is readable, and everything keyed by dataset name covers it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from study.core import config
from study.core.config import RunConfig
from study.core import catalog
from study.data import open_datasets, synthetic
from study.data.bundle import reader

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("dataset", catalog.DATASETS, ids=lambda d: d.name)
def test_every_dataset_has_a_reader_that_opens_the_synthetic_data(dataset: catalog.Dataset,
                                                                   synthetic_root: Path) -> None:
    assert (synthetic_root / dataset.folder).is_dir()
    cfg = RunConfig(task=dataset.task, dataset=dataset.name, data_root=str(synthetic_root), subset=4, val_subset=4)
    split = reader(dataset.name).open_split(cfg, False)
    assert len(split) > 0
    b = open_datasets(cfg)
    x, _ = b.val[0]
    assert tuple(x.shape[-2:]) == (dataset.default_size, dataset.default_size)
    assert b.num_classes == len(b.classes) >= 2
    if dataset.classes:
        assert b.classes == list(dataset.classes)


def test_config_names_the_same_datasets() -> None:
    assert config.DATASETS == tuple(d.name for d in catalog.DATASETS)
    assert config.DATASET_TASKS == {d.name: (d.task,) for d in catalog.DATASETS}
    assert set(config.DEFAULT_DATASET.values()) <= set(catalog.BY_NAME)


def test_everything_keyed_by_dataset_covers_the_catalog() -> None:
    from study.data.s3.datasets import STREAM_OPENERS

    names = [d.name for d in catalog.DATASETS]
    assert list(synthetic.WRITERS) == names and set(STREAM_OPENERS) == set(names)
    assert len({d.folder for d in catalog.DATASETS}) == len(names)  # one folder per dataset under a root


MODULES = ["study.data", "study.core.catalog", "study.data.bundle", "study.data.checksum", "study.data.synthetic",
           "study.data.prepare", "study.data.cifar", "study.data.cifar100", "study.data.cub", "study.data.pets",
           "study.data.imagefolder", "study.data.integrity", "study.data.prepare_imagenet",
           "study.data.synthetic_cifar100", "study.data.synthetic_cub", "study.data.s3",
           "study.data.s3.urls", "study.data.s3.errors", "study.data.s3.client", "study.data.s3.datasets",
           "study.data.s3.cache", "study.data.s3.upload", "study.data.s3.shard_index", "study.data.s3.shards",
           "study.data.s3.shard_write"]


@pytest.mark.slow  # one fresh interpreter per module, twenty-five in all
def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    """An import loop shows as a module that fails when it is the first one imported; and the torch-free
    modules must stay torch-free (the parent process imports them). Two interpreters at a time: each
    spends its seconds importing torch on one core."""
    from concurrent.futures import ThreadPoolExecutor

    def first(m: str) -> str:
        r = subprocess.run([sys.executable, "-c", f"import {m}, sys; print('torch' in sys.modules, 'boto3' in sys.modules)"],
                           capture_output=True, text=True, cwd=REPO, timeout=300)
        return f"{r.returncode} {r.stdout.strip()} {r.stderr.strip().splitlines()[-1:]}"

    with ThreadPoolExecutor(max_workers=2) as pool:
        rows = dict(zip(MODULES, pool.map(first, MODULES)))
    assert set(rows) == set(MODULES)
    for m, row in rows.items():
        assert row.startswith("0 "), (m, row)
    light = ["study.data", "study.core.catalog", "study.data.bundle", "study.data.checksum", "study.data.prepare",
             "study.data.integrity", "study.data.prepare_imagenet", "study.data.synthetic_cifar100",
             "study.data.synthetic_cub"]
    assert all(rows[m].startswith("0 False False") for m in light), {m: rows[m] for m in light}
