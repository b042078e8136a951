"""CIFAR-100: the synthetic release is what torchvision's CIFAR100 reads, fine labels by default and
the coarse superclasses as an option, with a learnable signal; the MD5 rule is CIFAR-10's."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from torchvision.datasets import CIFAR100

from study.core.config import ConfigError, RunConfig
from study.data import open_datasets
from study.data.cifar100 import CIFAR100Batches
from study.data.synthetic_cifar100 import COARSE_NAMES, COARSE_OF, FINE_NAMES


def load(folder: Path, name: str) -> dict:
    with open(folder / name, "rb") as f:
        return pickle.load(f, encoding="bytes")


def test_release_layout_and_keys(synthetic_root: Path) -> None:
    folder = synthetic_root / "cifar-100-python"
    assert {"train", "test", "meta", "SYNTHETIC"} <= {p.name for p in folder.iterdir()}
    train = load(folder, "train")
    assert set(train) == {b"filenames", b"batch_label", b"fine_labels", b"coarse_labels", b"data"}
    assert train[b"data"].shape == (2000, 3072) and train[b"data"].dtype == np.uint8
    meta = load(folder, "meta")
    assert len(meta[b"fine_label_names"]) == 100 and len(meta[b"coarse_label_names"]) == 20
    # the release's grouping: five classes per superclass, each class in one superclass
    pairs = set(zip(train[b"fine_labels"], train[b"coarse_labels"]))
    assert len(pairs) == 100 and np.bincount([c for _, c in pairs]).tolist() == [5] * 20
    assert FINE_NAMES[0] == "apple" and COARSE_NAMES[COARSE_OF["apple"]] == "fruit_and_vegetables"


def test_plain_torchvision_refuses_it_and_the_marker_aware_reader_reads_it(synthetic_root: Path) -> None:
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        CIFAR100(str(synthetic_root), train=True, download=False)
    ds = CIFAR100Batches(str(synthetic_root), train=False, download=False)
    assert isinstance(ds, CIFAR100) and len(ds) == 500 and ds.classes == FINE_NAMES
    assert np.bincount(ds.targets, minlength=100).tolist() == [5] * 100


def test_fine_labels_by_default_coarse_as_an_option(synthetic_root: Path) -> None:
    fine = open_datasets(RunConfig(dataset="cifar100", data_root=str(synthetic_root)))
    coarse = open_datasets(RunConfig(dataset="cifar100", data_root=str(synthetic_root), coarse_labels=True))
    assert (fine.num_classes, coarse.num_classes) == (100, 20)
    assert coarse.classes == COARSE_NAMES and fine.classes == FINE_NAMES
    for i in (0, 7, 1999):
        x, y = fine.train[i]
        assert tuple(x.shape) == (3, 32, 32)
        assert coarse.train.targets[i] == COARSE_OF[FINE_NAMES[y]]


def test_coarse_labels_belong_to_cifar100() -> None:
    with pytest.raises(ConfigError, match="--coarse-labels"):
        RunConfig(dataset="cifar10", coarse_labels=True)


@pytest.mark.parametrize("labels, classes, floor", [(b"fine_labels", 100, 0.1), (b"coarse_labels", 20, 0.25)])
def test_signal_nearest_class_mean_beats_chance(synthetic_root: Path, labels: bytes, classes: int, floor: float) -> None:
    """Class means of raw pixels classify the test set far above chance (1 % fine, 5 % coarse)."""
    folder = synthetic_root / "cifar-100-python"
    train, test = load(folder, "train"), load(folder, "test")
    x, y = train[b"data"].astype(np.float32) / 255, np.asarray(train[labels])
    xt, yt = test[b"data"].astype(np.float32) / 255, np.asarray(test[labels])
    means = np.stack([x[y == c].mean(0) for c in range(classes)])
    dist = (xt ** 2).sum(1)[:, None] - 2 * xt @ means.T + (means ** 2).sum(1)[None]
    assert float((dist.argmin(1) == yt).mean()) > floor


def test_release_looking_copy_with_other_md5s_says_both_ways_on(tmp_path: Path, synthetic_root: Path) -> None:
    root = tmp_path / "mine"
    shutil.copytree(synthetic_root / "cifar-100-python", root / "cifar-100-python")
    (root / "cifar-100-python" / "SYNTHETIC").unlink()
    with pytest.raises(ConfigError) as e:
        open_datasets(RunConfig(dataset="cifar100", data_root=str(root)))
    msg = str(e.value)
    assert "CIFAR-100" in msg and f"./prepare.sh --root {root} --cifar cifar-100-python.tar.gz" in msg
    assert f"./prepare.sh --root {root} --no-verify" in msg
