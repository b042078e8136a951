"""open_datasets(RunConfig) on the synthetic sets: shapes, dtypes, targets, subsets, load records,
missing and corrupt data."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Subset

from study.core.config import ConfigError, RunConfig
from study.data import DataBundle, LoadRecord, open_datasets, take_subset
from study.data import cifar as cifar_mod
from study.data.pets import JointTransform, trimap_to_mask


def cfg(root: Path, **kw) -> RunConfig:
    return RunConfig(data_root=str(root), **kw)


def check_loads(b: DataBundle, n_train: int, n_val: int) -> None:
    assert [r.split for r in b.loads] == ["train", "val"]
    for r, n in zip(b.loads, (n_train, n_val)):
        assert isinstance(r, LoadRecord) and r.count == n and r.seconds >= 0 and r.start > 1e9


def test_cifar(synthetic_root: Path) -> None:
    b = open_datasets(cfg(synthetic_root, dataset="cifar10"))
    assert b.num_classes == 10 and len(b.classes) == 10
    assert len(b.train) == 2000 and len(b.val) == 500
    check_loads(b, 2000, 500)
    for ds in (b.train, b.val):
        x, y = ds[3]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert isinstance(y, int) and 0 <= y < 10
    x, _ = b.val[0]
    assert -3 < float(x.mean()) < 3 and float(x.std()) > 0.2  # normalised, not [0, 1]
    assert torch.equal(b.val[0][0], b.val[0][0])  # val is deterministic


def test_cifar_image_size(synthetic_root: Path) -> None:
    b = open_datasets(cfg(synthetic_root, dataset="cifar10", image_size=48, subset=4, val_subset=4))
    assert b.train[0][0].shape == (3, 48, 48) and b.val[0][0].shape == (3, 48, 48)


def test_pets_segmentation(synthetic_root: Path) -> None:
    b = open_datasets(cfg(synthetic_root, task="segment", image_size=96))
    assert b.num_classes == 2 and b.classes == ["background", "pet"]
    assert len(b.train) == 120 and len(b.val) == 40
    check_loads(b, 120, 40)
    seen: set[int] = set()
    for ds in (b.train, b.val):
        for i in range(0, len(ds), 7):
            x, m = ds[i]
            assert x.shape == (3, 96, 96) and x.dtype == torch.float32
            assert m.shape == (96, 96) and m.dtype == torch.int64
            values = set(torch.unique(m).tolist())
            assert values <= {0, 1, 255}
            assert {0, 1} <= values, "each picture has pet and background"
            seen |= values
    assert seen == {0, 1, 255}


def test_pets_default_size_is_256(synthetic_root: Path) -> None:
    b = open_datasets(cfg(synthetic_root, task="segment", val_subset=1))
    x, m = b.val[0]
    assert x.shape == (3, 256, 256) and m.shape == (256, 256)


def test_trimap_mapping() -> None:
    from PIL import Image

    trimap = Image.fromarray(torch.tensor([[1, 2, 3, 0]], dtype=torch.uint8).numpy(), mode="L")
    assert trimap_to_mask(trimap).tolist() == [[1, 0, 255, 255]]


def test_pets_joint_flip_keeps_image_and_mask_aligned() -> None:
    from PIL import Image

    img = torch.zeros(8, 8, 3, dtype=torch.uint8)
    img[:, :3] = 255  # white left part = the pet
    tri = torch.full((8, 8), 2, dtype=torch.uint8)
    tri[:, :3] = 1
    t = JointTransform(size=8, train=True)
    flips = 0
    torch.manual_seed(0)
    for _ in range(20):
        x, m = t(Image.fromarray(img.numpy()), Image.fromarray(tri.numpy(), mode="L"))
        bright = x[0] > 0
        assert torch.equal(bright, m == 1)
        flips += int(m[0, -1] == 1)
    assert 0 < flips < 20


def test_pets_grayscale_image_becomes_rgb(synthetic_root: Path) -> None:
    from PIL import Image

    b = open_datasets(cfg(synthetic_root, task="segment", image_size=64))
    ds = b.train
    gray = [i for i, p in enumerate(ds._images) if Image.open(p).mode == "L"]  # type: ignore[attr-defined]
    assert gray, "the synthetic set has a grayscale JPEG"
    x, _ = ds[gray[0]]
    assert x.shape == (3, 64, 64)


def test_imagefolder(synthetic_root: Path) -> None:
    b = open_datasets(cfg(synthetic_root, dataset="imagefolder"))
    assert b.num_classes == 4 and b.classes[0] == "n00000001"
    check_loads(b, 80, 20)
    x, y = b.train[0]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and isinstance(y, int)
    x, y = b.val[0]
    assert x.shape == (3, 224, 224)
    b = open_datasets(cfg(synthetic_root, dataset="imagefolder", image_size=64))
    assert b.train[0][0].shape == (3, 64, 64) and b.val[0][0].shape == (3, 64, 64)


def test_subsets_are_seeded_and_bounded(synthetic_root: Path) -> None:
    b = open_datasets(cfg(synthetic_root, dataset="cifar10", subset=100, val_subset=30, seed=1))
    assert isinstance(b.train, Subset) and len(b.train) == 100 and len(b.val) == 30
    again = open_datasets(cfg(synthetic_root, dataset="cifar10", subset=100, val_subset=30, seed=1))
    other = open_datasets(cfg(synthetic_root, dataset="cifar10", subset=100, val_subset=30, seed=2))
    assert b.train.indices == again.train.indices != other.train.indices  # type: ignore[attr-defined]
    assert b.loads[0].count == 2000  # the split as loaded, before the subset
    big = open_datasets(cfg(synthetic_root, task="segment", subset=10_000, val_subset=5))
    assert len(big.train) == 120 and len(big.val) == 5
    assert len(take_subset(list(range(10)), 0, 0)) == 10


def test_datasets_pickle_and_work_in_loader_workers(synthetic_root: Path) -> None:
    for kw in (dict(dataset="cifar10"), dict(task="segment", image_size=64), dict(dataset="imagefolder", image_size=32)):
        b = open_datasets(cfg(synthetic_root, subset=8, val_subset=8, **kw))
        for ds in (b.train, b.val):
            pickle.loads(pickle.dumps(ds))
    b = open_datasets(cfg(synthetic_root, task="segment", image_size=64, subset=8))
    x, m = next(iter(DataLoader(b.train, batch_size=4, num_workers=2)))
    assert x.shape == (4, 3, 64, 64) and m.shape == (4, 64, 64)


@pytest.mark.parametrize("kw, expected, hint", [
    (dict(dataset="cifar10"), "cifar-10-batches-py", "--cifar"),
    (dict(task="segment"), "oxford-iiit-pet", "--pets"),
    (dict(dataset="imagefolder"), "imagenet/train", "--imagenet"),
])
def test_missing_dataset_is_one_helpful_line(tmp_path: Path, kw: dict, expected: str, hint: str) -> None:
    with pytest.raises(ConfigError) as e:
        open_datasets(cfg(tmp_path / "nowhere", **kw))
    msg = str(e.value)
    assert "\n" not in msg and expected in msg and "./prepare.sh" in msg and "--synthetic" in msg and hint in msg
    assert f"--root {tmp_path / 'nowhere'}" in msg


def test_incomplete_pets_is_reported(tmp_path: Path, synthetic_root: Path) -> None:
    shutil.copytree(synthetic_root / "oxford-iiit-pet", tmp_path / "oxford-iiit-pet")
    (tmp_path / "oxford-iiit-pet" / "annotations" / "test.txt").unlink()
    with pytest.raises(ConfigError, match="missing annotations/test.txt"):
        open_datasets(cfg(tmp_path, task="segment"))


def _unmarked_cifar(tmp_path: Path, synthetic_root: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    shutil.copytree(synthetic_root / "cifar-10-batches-py", folder)
    (folder / "SYNTHETIC").unlink()
    return folder


def test_release_looking_cifar_with_wrong_md5_is_rejected(tmp_path: Path, synthetic_root: Path) -> None:
    """Without the marker the files claim to be the release; their MD5s differ from the official
    ones, so they are refused as corrupt."""
    _unmarked_cifar(tmp_path, synthetic_root)
    with pytest.raises(ConfigError, match=r"corrupt CIFAR-10 file .*data_batch_1") as e:
        open_datasets(cfg(tmp_path, dataset="cifar10"))
    assert "\n" not in str(e.value)


def test_release_md5_path_accepts_matching_files_and_catches_one_flipped_byte(
        tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exercise the verification itself: pretend these files' MD5s are the official ones."""
    folder = _unmarked_cifar(tmp_path, synthetic_root)
    official = [(n, cifar_mod.file_md5(folder / n)) for n, _ in cifar_mod.release_files()]
    monkeypatch.setattr(cifar_mod, "release_files", lambda dataset="cifar10": official)
    b = open_datasets(cfg(tmp_path, dataset="cifar10"))
    assert len(b.train) == 2000
    path = folder / "data_batch_3"
    data = bytearray(path.read_bytes())
    data[-100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="corrupt CIFAR-10 file .*data_batch_3"):
        open_datasets(cfg(tmp_path, dataset="cifar10"))


def test_missing_cifar_batch(tmp_path: Path, synthetic_root: Path) -> None:
    shutil.copytree(synthetic_root / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(ConfigError, match="incomplete CIFAR-10 .*missing data_batch_4"):
        open_datasets(cfg(tmp_path, dataset="cifar10"))


def test_s3_roots_go_to_the_s3_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import study.data.s3 as s3

    monkeypatch.setattr(s3, "open_datasets", lambda c: ("from s3", c.data_root))
    assert open_datasets(RunConfig(data_root="s3://bucket/prefix")) == ("from s3", "s3://bucket/prefix")


@pytest.mark.usefixtures("without_boto3")
def test_s3_without_boto3_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"s3://bucket/prefix.*boto3") as e:
        open_datasets(RunConfig(data_root="s3://bucket/prefix"))
    assert "\n" not in str(e.value)
