"""ImageNet as Kaggle ships it: ``LOC_val_solution.csv`` and ``LOC_synset_mapping.txt`` beside
``ILSVRC/``, ``ILSVRC/Data/CLS-LOC/train/<wnid>/*.JPEG`` and a flat ``val/``. prepare.sh takes the
top folder, ILSVRC/ or CLS-LOC/, finds the labels and names beside any of them (or as
--imagenet-labels), and the class names reach what the checkpoint carries to predict and pictures."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from PIL import Image

from study.core.config import ConfigError, RunConfig
from study.data import open_datasets
from study.data.prepare import main
from study.train.checkpoint_meta import checkpoint_meta

SYNSETS = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus",
           "n01484850": "great white shark, white shark, man-eater", "n01491361": "tiger shark, Galeocerdo cuvieri"}


def kaggle_download(top: Path, with_labels: bool = True) -> Path:
    """A small copy of the Kaggle download's layout: 3 train and 2 val pictures per class."""
    cls = top / "ILSVRC" / "Data" / "CLS-LOC"
    (cls / "val").mkdir(parents=True)
    (cls / "test").mkdir()
    (top / "ILSVRC" / "Annotations" / "CLS-LOC").mkdir(parents=True)
    rows, k = [], 0
    for c, wnid in enumerate(SYNSETS):
        (cls / "train" / wnid).mkdir(parents=True)
        colour = (60 * c, 255 - 60 * c, 128)
        for i in range(3):
            Image.new("RGB", (40, 30), colour).save(cls / "train" / wnid / f"{wnid}_{i}.JPEG")
        for _ in range(2):
            k += 1
            image_id = f"ILSVRC2012_val_{k:08d}"
            Image.new("RGB", (30, 40), colour).save(cls / "val" / f"{image_id}.JPEG")
            rows.append([image_id, f"{wnid} 1 2 20 30 {wnid} 3 4 10 10"])
    if with_labels:
        with open(top / "LOC_val_solution.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ImageId", "PredictionString"])
            w.writerows(rows)
        (top / "LOC_synset_mapping.txt").write_text("".join(f"{w} {n}\n" for w, n in SYNSETS.items()))
    (top / "LOC_sample_submission.csv").write_text("ImageId,PredictionString\n")
    return top


@pytest.mark.parametrize("given", ["", "ILSVRC", "ILSVRC/Data/CLS-LOC"])
def test_each_folder_of_the_download_prepares_with_labels_and_names(tmp_path: Path, given: str,
                                                                    capsys: pytest.CaptureFixture) -> None:
    top = kaggle_download(tmp_path / "imagenet-object-localization-challenge")
    root = tmp_path / "data"
    assert main(["--root", str(root), "--imagenet", str(top / given)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "split 8 val images" in out and "class names from" in out and "'n01440764 tench'" in out
    cfg = RunConfig(dataset="imagefolder", data_root=str(root), image_size=32)
    b = open_datasets(cfg)
    assert (len(b.train), len(b.val)) == (12, 8)
    assert b.classes == ["n01440764 tench", "n01443537 goldfish", "n01484850 great white shark", "n01491361 tiger shark"]
    assert [b.val[i][1] for i in range(len(b.val))] == [0, 0, 1, 1, 2, 2, 3, 3]  # the solution's labels
    assert checkpoint_meta(cfg, b.num_classes, b.classes)["classes"][0] == "n01440764 tench"  # what predict shows


def test_labels_elsewhere_are_named_where_looked_and_taken_as_a_flag(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    top = kaggle_download(tmp_path / "dl", with_labels=False)
    root = tmp_path / "data"
    assert main(["--root", str(root), "--imagenet", str(top / "ILSVRC")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no LOC_val_solution.csv" in err and "--imagenet-labels" in err
    looked = err.split("looked in ")[1].split(";")[0].split(", ")  # every place it looked, nearest first
    cls = top / "ILSVRC" / "Data" / "CLS-LOC"
    assert looked == [str(cls), str(cls.parent), str(top / "ILSVRC"), str(top)]
    labels = kaggle_download(tmp_path / "other")
    args = ["--root", str(root), "--imagenet", str(top), "--imagenet-labels", str(labels / "LOC_val_solution.csv"),
            "--imagenet-labels", str(labels / "LOC_synset_mapping.txt")]
    assert main(args) == 0
    assert open_datasets(RunConfig(dataset="imagefolder", data_root=str(root))).classes[1] == "n01443537 goldfish"


def test_without_a_mapping_the_wnids_name_the_classes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    top = kaggle_download(tmp_path / "dl")
    (top / "LOC_synset_mapping.txt").unlink()
    root = tmp_path / "data"
    assert main(["--root", str(root), "--imagenet", str(top)]) == 0
    assert "classes are named by WordNet id" in capsys.readouterr().out
    assert open_datasets(RunConfig(dataset="imagefolder", data_root=str(root))).classes[0] == "n01440764"


def test_a_label_file_of_neither_kind_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    top = kaggle_download(tmp_path / "dl")
    (tmp_path / "x.csv").write_text("a,b\n")
    assert main(["--root", str(tmp_path / "data"), "--imagenet", str(top), "--imagenet-labels", str(tmp_path / "x.csv")]) == 2
    assert "neither LOC_val_solution.csv" in capsys.readouterr().err


def test_data_root_at_the_users_imagenet_is_never_told_to_write_synthetic_data_there(tmp_path: Path) -> None:
    top = kaggle_download(tmp_path / "dl")
    for where in (top, top / "ILSVRC", top / "ILSVRC" / "Data" / "CLS-LOC"):
        with pytest.raises(ConfigError) as e:
            open_datasets(RunConfig(dataset="imagefolder", data_root=str(where)))
        msg = str(e.value)
        assert "--synthetic" not in msg and f"./prepare.sh --imagenet {where}" in msg and "--data-root data" in msg


def test_a_folder_of_other_data_is_never_told_to_take_synthetic_data(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "holiday.jpg").write_bytes(b"")
    for dataset in ("cifar10", "cifar100", "cub200", "imagefolder"):
        with pytest.raises(ConfigError) as e:
            open_datasets(RunConfig(dataset=dataset, data_root=str(tmp_path / "mine")))
        assert "--synthetic" not in str(e.value) and "--data-root data" in str(e.value), str(e.value)
    shutil.rmtree(tmp_path / "mine")
    with pytest.raises(ConfigError, match=rf"./prepare.sh --root {tmp_path / 'mine'} --synthetic"):
        open_datasets(RunConfig(dataset="cub200", data_root=str(tmp_path / "mine")))  # nothing there: fine
