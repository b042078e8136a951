"""CUB-200-2011 as published: the synthetic copy is in the release's layout, the reader follows its
index files (split, labels, class names, boxes), prepare.sh --cub extracts the archive, and a damaged
index is one line naming the file and what to run."""
from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from study.core.config import ConfigError, RunConfig
from study.data import open_datasets
from study.data.cub import CUBImages
from study.data.prepare import main
from study.data.synthetic_cub import write_cub


def cfg(root: Path, **kw) -> RunConfig:
    return RunConfig(dataset="cub200", model="tiny", data_root=str(root), **kw)


def test_layout_is_the_releases(synthetic_root: Path) -> None:
    folder = synthetic_root / "CUB_200_2011"
    for name in ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt", "bounding_boxes.txt"):
        assert (folder / name).is_file(), name
    first = (folder / "images.txt").read_text().splitlines()[0]
    assert first == "1 001.Black_footed_Albatross/Black_footed_Albatross_0001_1.jpg"
    assert (folder / "images" / first.split()[1]).is_file()
    assert Image.open(folder / "images" / (folder / "images.txt").read_text().splitlines()[1].split()[1]).mode == "L"


def test_reader_follows_the_index(synthetic_root: Path) -> None:
    b = open_datasets(cfg(synthetic_root))
    assert (len(b.train), len(b.val), b.num_classes) == (240, 60, 10)
    assert b.classes[:2] == ["Black_footed_Albatross", "Laysan_Albatross"]
    split = {int(i): f for i, f in (ln.split() for ln in (synthetic_root / "CUB_200_2011" / "train_test_split.txt")
                                     .read_text().splitlines())}
    assert sum(f == "1" for f in split.values()) == 240
    x, y = b.val[0]
    assert tuple(x.shape) == (3, 224, 224) and 0 <= y < 10
    gray, _ = b.train[1]  # the grayscale image, converted
    assert gray.shape[0] == 3


def test_crop_to_box_crops_to_bounding_boxes(synthetic_root: Path) -> None:
    plain = open_datasets(cfg(synthetic_root)).train
    cropped = open_datasets(cfg(synthetic_root, crop_to_box=True)).train
    assert isinstance(cropped, CUBImages)
    box = [float(v) for v in (synthetic_root / "CUB_200_2011" / "bounding_boxes.txt").read_text().splitlines()[0].split()[1:]]
    assert cropped.load(0).size == (int(box[2]), int(box[3])) and plain.load(0).size != cropped.load(0).size
    with pytest.raises(ConfigError, match="--crop-to-box"):
        RunConfig(dataset="cifar10", crop_to_box=True)


def test_signal_colour_means_beat_chance(synthetic_root: Path) -> None:
    """Mean colour of the box's centre per class separates the test images far above chance (10 %)."""
    b = open_datasets(cfg(synthetic_root, crop_to_box=True, image_size=32))

    def feats(ds) -> tuple[np.ndarray, np.ndarray]:
        xs = [np.asarray(ds.load(i).convert("HSV").resize((8, 8)), np.float32).reshape(-1) / 255 for i in range(len(ds))]
        return np.stack(xs), np.asarray(ds.targets)

    x, y = feats(b.train)
    xt, yt = feats(b.val)
    means = np.stack([x[y == c].mean(0) for c in range(10)])
    acc = float((((xt[:, None] - means[None]) ** 2).sum(-1).argmin(1) == yt).mean())
    assert acc > 0.5, acc


@pytest.mark.parametrize("damage, words", [
    (lambda f: (f / "classes.txt").unlink(), ["incomplete CUB-200-2011", "classes.txt", "--cub"]),
    (lambda f: (f / "image_class_labels.txt").write_text("1 1\n"), ["image_class_labels.txt has no line"]),
    (lambda f: (f / "images.txt").write_text("one two three\n"), ["images.txt: line 1"]),
    (lambda f: (f / "image_class_labels.txt").write_text(
        "".join(f"{i} 99\n" for i in range(1, 301))), ["class 99", "outside the 10 classes"]),
    (lambda f: shutil.rmtree(f / "images" / "003.Sooty_Albatross"), ["images listed", "missing"]),
])
@pytest.mark.parametrize("marked", [True, False], ids=["synthetic", "download"])
def test_damaged_copy_is_one_line(tmp_path: Path, synthetic_root: Path, damage, words: list[str], marked: bool) -> None:
    """The hint fits the copy: a synthetic one is written anew, a download prepared again (--root kept)."""
    shutil.copytree(synthetic_root / "CUB_200_2011", tmp_path / "CUB_200_2011")
    if not marked:
        (tmp_path / "CUB_200_2011" / "SYNTHETIC").unlink()
    damage(tmp_path / "CUB_200_2011")
    with pytest.raises(ConfigError) as e:
        open_datasets(cfg(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    if "incomplete" not in msg:
        again = "--synthetic --force" if marked else "--cub CUB_200_2011.tgz"
        assert f"./prepare.sh --root {tmp_path} {again}" in msg, msg


def test_prepare_cub_extracts_the_published_archive(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = write_cub(tmp_path / "src", n_classes=3, n_train_per_class=2, n_test_per_class=1)
    (src / "SYNTHETIC").unlink()  # as the download: no marker
    (tmp_path / "attributes.txt").write_text("1 has_bill_shape::curved\n")
    archive = tmp_path / "CUB_200_2011.tgz"
    with tarfile.open(archive, "w:gz") as tar:  # the release's tgz: CUB_200_2011/ and a top-level attributes.txt
        tar.add(src, arcname="CUB_200_2011")
        tar.add(tmp_path / "attributes.txt", arcname="attributes.txt")
    root = tmp_path / "data"
    assert main(["--root", str(root), "--cub", str(archive)]) == 0
    said = capsys.readouterr().out
    assert "3 classes" in said and "6 train" in said and "3 test" in said
    assert sorted(p.name for p in root.iterdir()) == ["CUB_200_2011"]  # attributes.txt stays out
    b = open_datasets(cfg(root))
    assert (len(b.train), b.num_classes) == (6, 3)


def test_prepare_cub_refuses_another_archive(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "x.txt").write_text("x")
    with tarfile.open(tmp_path / "a.tgz", "w:gz") as tar:
        tar.add(tmp_path / "x.txt", arcname="x.txt")
    assert main(["--root", str(tmp_path / "data"), "--cub", str(tmp_path / "a.tgz")]) == 2
    err = capsys.readouterr().err
    assert "not the CUB-200-2011 release" in err and len(err.strip().splitlines()) == 1
