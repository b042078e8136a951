"""The synthetic datasets are in the real formats (torchvision's own readers accept them) and carry
a learnable signal."""
from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import CIFAR10, ImageFolder, OxfordIIITPet

from study.data import synthetic
from study.data.cifar import CIFAR10Batches


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


# --- CIFAR-10 ---------------------------------------------------------------------------------------
def test_cifar_layout_and_marker(synthetic_root: Path) -> None:
    folder = synthetic_root / "cifar-10-batches-py"
    names = {p.name for p in folder.iterdir()}
    assert {f"data_batch_{i}" for i in range(1, 6)} | {"test_batch", "batches.meta", "SYNTHETIC"} <= names
    marker = json.loads((folder / "SYNTHETIC").read_text())
    assert marker["generator"] == "study.data.synthetic" and marker["seed"] == 0


def test_cifar_pickles_read_both_ways_like_the_release(synthetic_root: Path) -> None:
    """The release was pickled by Python 2: keys load as b"data" with encoding="bytes" (the CIFAR
    page's recipe) and as "data" with encoding="latin1" (what torchvision uses)."""
    path = synthetic_root / "cifar-10-batches-py" / "data_batch_1"
    with open(path, "rb") as f:
        assert f.read(2) == b"\x80\x02"  # protocol 2
    with open(path, "rb") as f:
        as_bytes = pickle.load(f, encoding="bytes")
    assert set(as_bytes) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert as_bytes[b"data"].dtype == np.uint8 and as_bytes[b"data"].shape == (400, 3072)
    assert as_bytes[b"batch_label"] == b"training batch 1 of 5"
    with open(path, "rb") as f:
        as_str = pickle.load(f, encoding="latin1")
    assert set(as_str) == {"batch_label", "labels", "data", "filenames"}
    np.testing.assert_array_equal(as_str["data"], as_bytes[b"data"])
    with open(path.with_name("batches.meta"), "rb") as f:
        meta = pickle.load(f, encoding="bytes")
    assert meta[b"label_names"] == [n.encode() for n in synthetic.CIFAR_LABEL_NAMES]


def test_plain_torchvision_cifar_rejects_synthetic_files(synthetic_root: Path) -> None:
    """torchvision checks the official MD5s; synthetic batches cannot match them. That is why the
    project reads CIFAR through CIFAR10Batches, which skips the check only behind the marker."""
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        CIFAR10(str(synthetic_root), train=True, download=False)


def test_torchvision_cifar_reader_with_marker_bypass(synthetic_root: Path) -> None:
    train = CIFAR10Batches(str(synthetic_root), train=True, download=False)
    test = CIFAR10Batches(str(synthetic_root), train=False, download=False)
    assert isinstance(train, CIFAR10)
    assert len(train) == 2000 and len(test) == 500
    assert train.data.shape == (2000, 32, 32, 3) and train.data.dtype == np.uint8
    assert train.classes == synthetic.CIFAR_LABEL_NAMES
    img, label = train[0]
    assert img.size == (32, 32) and 0 <= label < 10
    assert np.bincount(train.targets, minlength=10).tolist() == [200] * 10


def test_cifar_signal_nearest_class_mean_beats_chance(synthetic_root: Path) -> None:
    """Cheap stand-in for 'a short run learns it': class means of raw pixels classify the test set
    far above chance (10%)."""
    folder = synthetic_root / "cifar-10-batches-py"

    def load(name: str) -> tuple[np.ndarray, np.ndarray]:
        with open(folder / name, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        return d[b"data"].astype(np.float32) / 255, np.asarray(d[b"labels"])

    parts = [load(f"data_batch_{i}") for i in range(1, 6)]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    xt, yt = load("test_batch")
    means = np.stack([x[y == c].mean(0) for c in range(10)])
    dist = (xt**2).sum(1)[:, None] - 2 * xt @ means.T + (means**2).sum(1)[None]
    acc = float((dist.argmin(1) == yt).mean())
    assert acc > 0.3, acc


def test_synthetic_is_deterministic_and_seeded(tmp_path: Path) -> None:
    a = synthetic.write_cifar(tmp_path / "a", n_train=50, n_test=10, seed=3)
    b = synthetic.write_cifar(tmp_path / "b", n_train=50, n_test=10, seed=3)
    c = synthetic.write_cifar(tmp_path / "c", n_train=50, n_test=10, seed=4)
    assert _digest(a) == _digest(b) != _digest(c)


def test_writers_replace_synthetic_but_never_real_data(tmp_path: Path) -> None:
    synthetic.write_imagefolder(tmp_path, n_train_per_class=2, n_val_per_class=1)
    synthetic.write_imagefolder(tmp_path, n_train_per_class=3, n_val_per_class=1)  # replaces
    assert len(list((tmp_path / "imagenet" / "train").rglob("*.JPEG"))) == 12
    (tmp_path / "imagenet" / "SYNTHETIC").unlink()  # now it looks like real data
    with pytest.raises(FileExistsError):
        synthetic.write_imagefolder(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folder left behind"


# --- Oxford-IIIT Pet --------------------------------------------------------------------------------
def test_torchvision_pets_reader_as_is(synthetic_root: Path) -> None:
    ds = OxfordIIITPet(str(synthetic_root), split="trainval", target_types="segmentation", download=False)
    test = OxfordIIITPet(str(synthetic_root), split="test", target_types=["category", "binary-category"])
    assert len(ds) == 120 and len(test) == 40
    img, trimap = ds[0]
    assert img.mode == "RGB" and trimap.mode == "L" and img.size == trimap.size
    assert set(np.unique(np.asarray(trimap))) == {1, 2, 3}
    for i in range(len(test)):
        _, (cat, species) = test[i]
        assert 0 <= cat < 37 and species in (0, 1)


def test_pets_files_look_like_the_release(synthetic_root: Path) -> None:
    folder = synthetic_root / "oxford-iiit-pet"
    lines = (folder / "annotations" / "trainval.txt").read_text().splitlines()
    sizes, modes = set(), set()
    for line in lines:
        name, class_id, species, breed_id = line.split()
        breed = name.rsplit("_", 1)[0]
        assert breed in synthetic.PET_BREEDS
        assert int(species) == (1 if breed[0].isupper() else 2)
        assert 1 <= int(class_id) <= 37 and int(breed_id) >= 1
        with Image.open(folder / "images" / f"{name}.jpg") as im:
            assert im.format == "JPEG"
            sizes.add(im.size)
            modes.add(im.mode)
        with Image.open(folder / "annotations" / "trimaps" / f"{name}.png") as tm:
            assert tm.mode == "L" and tm.size == im.size
    assert len(sizes) > 10, "image sizes should vary"
    assert modes == {"RGB", "L"}, "one grayscale JPEG exercises the RGB conversion"
    assert (folder / "annotations" / "list.txt").read_text().startswith("#")
    # class ids are the alphabetical (case-insensitive) breed order, as in the release
    ids = {line.split()[0].rsplit("_", 1)[0]: int(line.split()[1]) for line in lines}
    assert ids.get("Abyssinian", 1) == 1
    assert ids.get("yorkshire_terrier", 37) == 37


# --- ImageFolder ------------------------------------------------------------------------------------
def test_torchvision_imagefolder_reader(synthetic_root: Path) -> None:
    train = ImageFolder(str(synthetic_root / "imagenet" / "train"))
    val = ImageFolder(str(synthetic_root / "imagenet" / "val"))
    assert train.classes == val.classes == ["n00000001", "n00000002", "n00000003", "n00000004"]
    assert len(train) == 80 and len(val) == 20
    img, label = train[0]
    assert img.mode == "RGB" and img.size == (64, 64) and label == 0
    assert all(Path(p).suffix == ".JPEG" for p, _ in train.samples)


def test_write_all_writes_every_layout_of_the_catalog(synthetic_root: Path) -> None:
    """The shared data root is write_all's: one folder per catalog row, and nothing else."""
    from study.core import catalog

    assert {p.name for p in synthetic_root.iterdir() if p.is_dir()} == {d.folder for d in catalog.DATASETS}


# The learnability claim itself is tested end to end through the CLI:
# tests/test_study_run.py::test_resnet18_beats_chance_on_synthetic_cifar
