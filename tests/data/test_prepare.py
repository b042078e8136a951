"""prepare.sh / study.data.prepare: synthetic idempotence, archive extraction and cleaning, errors."""
from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from study.core import catalog
from study.core.config import ConfigError, RunConfig
from study.data import cifar as cifar_mod
from study.data import open_datasets, synthetic
from study.data.prepare import main

REPO = Path(__file__).resolve().parents[2]


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "study.data.prepare", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def make_tar(path: Path, members: dict[str, Path]) -> Path:
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:  # a real gzip, written fast
        for arcname, src in members.items():
            tar.add(src, arcname=arcname)
    return path


# --- --synthetic ----------------------------------------------------------------------------------
def test_prepare_sh_synthetic_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "data"
    first = subprocess.run(["bash", str(REPO / "prepare.sh"), "--synthetic", "--root", str(root)],
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    n = len(catalog.DATASETS)
    assert len(first.stdout.strip().splitlines()) == n and first.stdout.count("wrote synthetic") == n
    before = snapshot(root)
    assert any(k.startswith("cifar-10-batches-py/") for k in before)
    capsys.readouterr()
    assert main(["--synthetic", "--root", str(root)]) == 0  # in this process: the script ran above
    assert capsys.readouterr().out.count("already present") == n
    assert snapshot(root) == before  # nothing rewritten


def test_synthetic_force_rewrites_synthetic_only(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # two datasets stand for the catalog: what --force does to one does not depend on how many there are
    monkeypatch.setattr(catalog, "DATASETS", (catalog.CIFAR10, catalog.IMAGEFOLDER))
    assert main(["--synthetic", "--root", str(tmp_path)]) == 0
    (tmp_path / "imagenet" / "SYNTHETIC").unlink()  # pretend it is real data now
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main(["--synthetic", "--force", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [("wrote synthetic" in line, "left alone" in line) for line in out] == [(True, False), (False, True)]
    after = snapshot(tmp_path)
    imagenet = {k: v for k, v in before.items() if k.startswith("imagenet/")}
    assert imagenet == {k: v for k, v in after.items() if k.startswith("imagenet/")}
    cifar = "cifar-10-batches-py/data_batch_1"
    assert after[cifar][0] == before[cifar][0] and after[cifar][1] != before[cifar][1]  # same bytes, new file


def test_nothing_to_do_exits_2(capsys: pytest.CaptureFixture) -> None:
    assert main([]) == 2
    assert "nothing to do" in capsys.readouterr().err


# --- bad input: one line, exit 2, no traceback ----------------------------------------------------
@pytest.mark.parametrize("args", [
    ["--cifar", "missing.tar.gz"],
    ["--pets", "images.tar.gz", "annotations.tar.gz"],
    ["--cifar", "not_a_tar.tar.gz"],
    ["--imagenet", "no_such_dir"],
    ["--upload", "http://not-s3"],
])
def test_bad_input_is_one_line_on_stderr(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "not_a_tar.tar.gz").write_bytes(b"this is not a tar archive at all" * 10)
    r = run_module(*args, "--root", str(tmp_path / "data"), cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prepare: "), r.stderr
    assert "Traceback" not in r.stderr


# --- --cifar --------------------------------------------------------------------------------------
def _cifar_tar(tmp_path: Path, synthetic_root: Path, extra: dict[str, Path] | None = None) -> Path:
    src = synthetic_root / "cifar-10-batches-py"
    members = dict(extra or {})
    members.update({f"cifar-10-batches-py/{n}": src / n for n, _ in cifar_mod.release_files()})
    return make_tar(tmp_path / "cifar-10-python.tar.gz", members)


def test_cifar_archive_with_wrong_md5_is_refused(tmp_path: Path, synthetic_root: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    """Extracting the same archive again would fail again: the line says how to accept the copy,
    with the user's --root, and that command makes the study read it (saying the check was skipped)."""
    archive = _cifar_tar(tmp_path, synthetic_root)  # no marker inside: claims to be the release
    root = tmp_path / "data"
    assert main(["--root", str(root), "--cifar", str(archive)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not the official CIFAR-10 release" in err and "data_batch_1" in err and len(err.splitlines()) == 1
    command = err.split("mark it with ")[1].split(",")[0]
    assert command == f"./prepare.sh --root {root} --no-verify"
    with pytest.raises(ConfigError, match="corrupt CIFAR-10 file"):
        open_datasets(RunConfig(dataset="cifar10", data_root=str(root)))
    assert main(command.split()[1:]) == 0
    assert "marked" in capsys.readouterr().out and (root / "cifar-10-batches-py" / "UNVERIFIED").is_file()
    assert len(open_datasets(RunConfig(dataset="cifar10", data_root=str(root))).train) == 2000
    from study.data.integrity import skipped_checks

    assert "MD5 check skipped" in skipped_checks(str(root), "cifar10")[0]


def test_cifar_archive_extracted_unverified_with_no_verify(tmp_path: Path, synthetic_root: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    archive = _cifar_tar(tmp_path, synthetic_root)
    root = tmp_path / "data"
    assert main(["--root", str(root), "--no-verify", "--cifar", str(archive)]) == 0
    assert "marked UNVERIFIED" in capsys.readouterr().out
    assert len(open_datasets(RunConfig(dataset="cifar10", data_root=str(root))).val) == 500


def test_cifar100_archive_recognised(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from study.data.synthetic_cifar100 import write_cifar100

    src = write_cifar100(tmp_path / "src", n_train=200, n_test=100)
    archive = make_tar(tmp_path / "cifar-100-python.tar.gz",
                       {f"cifar-100-python/{n}": src / n for n in ("train", "test", "meta")})
    root = tmp_path / "data"
    assert main(["--root", str(root), "--cifar", str(archive)]) == 2  # not the release's MD5s
    assert "is not the official CIFAR-100 release" in capsys.readouterr().err
    assert main(["--root", str(root), "--no-verify", "--cifar", str(archive)]) == 0
    b = open_datasets(RunConfig(dataset="cifar100", data_root=str(root)))
    assert (len(b.train), len(b.val), b.num_classes) == (200, 100, 100)


def test_an_archive_of_neither_cifar_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "x.txt").write_text("x")
    archive = make_tar(tmp_path / "other.tar.gz", {"other/x.txt": tmp_path / "x.txt"})
    assert main(["--root", str(tmp_path / "data"), "--cifar", str(archive)]) == 2
    err = capsys.readouterr().err
    assert "not a CIFAR python release" in err and "cifar-100-python/train" in err


def test_cifar_archive_extracted_and_verified(tmp_path: Path, synthetic_root: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With the official MD5 list swapped for these files' MD5s, extraction + verification passes,
    and a synthetic stand-in already there is replaced (its marker must not survive)."""
    src = synthetic_root / "cifar-10-batches-py"
    official = [(n, cifar_mod.file_md5(src / n)) for n, _ in cifar_mod.release_files()]
    monkeypatch.setattr(cifar_mod, "release_files", lambda dataset="cifar10": official)
    root = tmp_path / "data"
    synthetic.write_cifar(root, n_train=20, n_test=10)
    archive = _cifar_tar(tmp_path, synthetic_root)
    assert main(["--root", str(root), "--cifar", str(archive)]) == 0
    assert not (root / "cifar-10-batches-py" / "SYNTHETIC").exists()
    assert len(open_datasets(RunConfig(data_root=str(root))).train) == 2000


def test_cifar_archive_cannot_escape_root(tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    evil = tmp_path / "evil.txt"
    evil.write_text("x")
    archive = _cifar_tar(tmp_path, synthetic_root, {"../escaped.txt": evil})
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["--root", "data", "--cifar", str(archive)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "escaped.txt" in err, err  # the member that would escape
    assert not (tmp_path / "escaped.txt").exists()


# --- --pets ---------------------------------------------------------------------------------------
def _pets_archives(tmp_path: Path, synthetic_root: Path) -> tuple[Path, Path, set[str], set[str]]:
    """Release-style tarballs of the synthetic pets plus three odd images; returns the names that must
    be dropped (the one that does not decode) and those kept for the reader to convert (CMYK, an RGBA
    PNG under a .jpg name, and the synthetic set's grayscale JPEG)."""
    work = tmp_path / "pets_src"
    shutil.copytree(synthetic_root / "oxford-iiit-pet", work)
    (work / "SYNTHETIC").unlink()
    images, trimaps = work / "images", work / "annotations" / "trimaps"
    rgb = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG")
    (images / "Bengal_900.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # truncated
    Image.fromarray(rgb).convert("CMYK").save(images / "Persian_900.jpg", "JPEG")
    Image.fromarray(rgb).convert("RGBA").save(images / "pug_900.jpg", "PNG")  # PNG in disguise
    tri = Image.fromarray(np.full((40, 50), 2, np.uint8), mode="L")
    for name in ("Bengal_900", "Persian_900", "pug_900"):
        tri.save(trimaps / f"{name}.png")
    with open(work / "annotations" / "trainval.txt", "a") as f:
        f.write("Bengal_900 2 1 2\nPersian_900 24 1 8\n")
    with open(work / "annotations" / "test.txt", "a") as f:
        f.write("pug_900 30 2 18\n")
    gray = [p.name for p in images.glob("*.jpg") if p.name[-7:-4] != "900" and Image.open(p).mode == "L"]
    assert len(gray) == 1
    img_tar = make_tar(tmp_path / "images.tar.gz", {"images": images})
    ann_tar = make_tar(tmp_path / "annotations.tar.gz", {"annotations": work / "annotations"})
    return img_tar, ann_tar, {"Bengal_900.jpg"}, {"Persian_900.jpg", "pug_900.jpg", *gray}


def test_pets_archives_extracted_and_cleaned(tmp_path: Path, synthetic_root: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    """Only the file that does not decode is dropped (and listed); grayscale, CMYK and RGBA images
    stay, byte for byte, in their splits, and the reader hands them over as RGB, as PIL's convert does."""
    img_tar, ann_tar, bad, odd = _pets_archives(tmp_path, synthetic_root)
    root = tmp_path / "data"
    synthetic.write_pets(root, n_trainval=4, n_test=2)  # a stand-in that must be replaced
    # archives given in either order
    assert main(["--root", str(root), "--pets", str(ann_tar), str(img_tar)]) == 0
    out = capsys.readouterr().out
    folder = root / "oxford-iiit-pet"
    assert not (folder / "SYNTHETIC").exists()
    dropped = next(line for line in out.splitlines() if "Bengal_900.jpg" in line)
    kept = next(line for line in out.splitlines() if "Persian_900.jpg" in line)
    assert "dropped 1 " in dropped and "kept 3 " in kept and "CMYK" in kept  # how many, which, and why
    assert "pug_900.jpg (RGBA PNG)" in out
    left = {p.name for p in (folder / "images").glob("*.jpg")}
    assert not (bad & left) and odd <= left and len(left) == 160 + 3 - len(bad)
    assert (folder / "images" / "Persian_900.jpg").read_bytes() == (tmp_path / "pets_src" / "images" / "Persian_900.jpg").read_bytes()
    listed = set()
    for split in ("trainval.txt", "test.txt"):
        for line in (folder / "annotations" / split).read_text().splitlines():
            assert len(line.split()) == 4
            listed.add(line.split()[0] + ".jpg")
    assert listed == left  # the published splits, less only the file that does not decode
    b = open_datasets(RunConfig(task="segment", data_root=str(root)))
    assert len(b.train) + len(b.val) == len(left)
    from study.data.pets import PetFiles

    for name in odd:
        split = "test" if name.startswith("pug") else "trainval"
        ds = PetFiles(str(root), split=split, target_types="segmentation")
        img, _ = ds[[Path(p).name for p in ds._images].index(name)]
        assert img.mode == "RGB"
        expected = Image.open(folder / "images" / name).convert("RGB")
        assert np.array_equal(np.asarray(img), np.asarray(expected))
    # running the cleaning again finds nothing more to drop, and the same images to convert
    from study.data.prepare import clean_pets

    dropped, converted = clean_pets(folder)
    assert dropped == [] and {n for n, _ in converted} == odd


def test_pets_needs_both_archives(tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture) -> None:
    img_tar, _, _, _ = _pets_archives(tmp_path, synthetic_root)
    assert main(["--root", str(tmp_path / "data"), "--pets", str(img_tar), str(img_tar)]) == 2
    assert "annotations" in capsys.readouterr().err


# --- --imagenet -----------------------------------------------------------------------------------
def test_imagenet_links_ilsvrc_layout(tmp_path: Path, synthetic_root: Path) -> None:
    src = tmp_path / "ILSVRC"
    cls = src / "Data" / "CLS-LOC"
    shutil.copytree(synthetic_root / "imagenet" / "train", cls / "train")
    (cls / "val").mkdir()
    with open(src / "LOC_val_solution.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageId", "PredictionString"])
        for p in sorted((synthetic_root / "imagenet" / "val").rglob("*.JPEG")):
            shutil.copy(p, cls / "val" / p.name)
            w.writerow([p.stem, f"{p.parent.name} 1 2 30 40"])
    root = tmp_path / "data"
    synthetic.write_imagefolder(root, n_train_per_class=1, n_val_per_class=1)
    assert main(["--root", str(root), "--imagenet", str(src)]) == 0
    b = open_datasets(RunConfig(dataset="imagefolder", data_root=str(root), image_size=32))
    assert b.num_classes == 4 and len(b.train) == 80 and len(b.val) == 20
    assert (root / "imagenet" / "train").is_symlink()
    assert main(["--root", str(root), "--imagenet", str(src)]) == 0  # redoing it is fine


# --- --upload -------------------------------------------------------------------------------------
def test_upload_calls_the_s3_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import study.data.s3 as s3

    calls = []
    monkeypatch.setattr(s3, "upload", lambda root, url, endpoint: calls.append((root, url, endpoint)))
    assert main(["--root", str(tmp_path), "--upload", "s3://bucket/pre", "--s3-endpoint", "http://127.0.0.1:1"]) == 0
    assert calls == [(str(tmp_path), "s3://bucket/pre", "http://127.0.0.1:1")]


@pytest.mark.usefixtures("without_boto3")
def test_upload_without_boto3(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--root", str(tmp_path), "--upload", "s3://bucket/pre"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("prepare: ") and "pip install boto3" in err
