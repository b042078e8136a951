"""Small synthetic datasets written in the REAL on-disk formats, with a learnable signal.

No machine here reaches the internet, so tests and dry runs use these instead of the downloads.
Each writer produces exactly the layout the standard readers expect:

* ``write_cifar``       -> ``<root>/cifar-10-batches-py/`` (python batches, as the release; read by
  ``torchvision.datasets.CIFAR10`` once its MD5 check is bypassed for the ``SYNTHETIC`` marker)
* ``write_pets``        -> ``<root>/oxford-iiit-pet/`` (JPEG images, trimap PNGs, split files;
  read by ``torchvision.datasets.OxfordIIITPet`` as is)
* ``write_imagefolder`` -> ``<root>/imagenet/{train,val}/<wnid>/*.JPEG`` (``ImageFolder``)

Every dataset folder also gets a ``SYNTHETIC`` marker (JSON naming the generator and seed). The
CIFAR reader uses it to skip the release MD5 check; ``prepare.py`` uses it to know that a folder
may be replaced. The signal: each class has its own background hue and its own shape (disc,
square, ring, stripes, ...) drawn at a jittered position and size, with noise, so a small CNN learns
it in a few dozen steps even under random crop + flip, while nothing is pixel-identical. Pets get an
irregular textured blob ("the pet") on a smoother background, with a trimap border band.

numpy + PIL only; the default sets take a second or two.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import pickle
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from study.core.catalog import CIFAR10, CIFAR100, CUB200, IMAGEFOLDER, OXFORD_PETS

MARKER = "SYNTHETIC"
GENERATOR = "study.data.synthetic"

CIFAR_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# The 37 Oxford-IIIT Pet breeds, spelled as in the release: capitalised = cat, lower case = dog.
PET_BREEDS = [
    "Abyssinian", "Bengal", "Birman", "Bombay", "British_Shorthair", "Egyptian_Mau", "Maine_Coon",
    "Persian", "Ragdoll", "Russian_Blue", "Siamese", "Sphynx",
    "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle", "boxer", "chihuahua",
    "english_cocker_spaniel", "english_setter", "german_shorthaired", "great_pyrenees", "havanese",
    "japanese_chin", "keeshond", "leonberger", "miniature_pinscher", "newfoundland", "pomeranian", "pug",
    "saint_bernard", "samoyed", "scottish_terrier", "shiba_inu", "staffordshire_bull_terrier",
    "wheaten_terrier", "yorkshire_terrier",
]


def is_synthetic(folder: str | os.PathLike) -> bool:
    """True when ``folder`` carries the marker this module writes."""
    return (Path(folder) / MARKER).is_file()


# --------------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------------
def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, all inputs in [0, 1]; returns (..., 3) floats in [0, 1]."""
    h = np.mod(h, 1.0) * 6.0
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = [
        np.stack([v, t, p], -1), np.stack([q, v, p], -1), np.stack([p, v, t], -1),
        np.stack([p, q, v], -1), np.stack([t, p, v], -1), np.stack([v, p, q], -1),
    ]
    out = np.zeros(np.shape(h) + (3,))
    for k in range(6):
        out = np.where((i == k)[..., None], choices[k], out)
    return out


def shape_mask(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mask of shape number ``shape`` (0..9) in coordinates normalised by the shape's radius.

    All shapes are symmetric under a horizontal flip, so RandomHorizontalFlip keeps the label.
    """
    au, av = np.abs(u), np.abs(v)
    box = np.maximum(au, av)
    rho = np.hypot(u, v)
    shape %= 10
    if shape == 0:  # disc
        return rho < 1.0
    if shape == 1:  # square
        return box < 0.8
    if shape == 2:  # ring
        return (rho > 0.5) & (rho < 1.0)
    if shape == 3:  # horizontal stripes
        return (box < 0.9) & (np.floor((v + 0.9) * 2.5) % 2 == 0)
    if shape == 4:  # vertical stripes
        return (box < 0.9) & (np.floor((u + 0.9) * 2.5) % 2 == 0)
    if shape == 5:  # plus
        return ((au < 0.3) & (av < 1.0)) | ((av < 0.3) & (au < 1.0))
    if shape == 6:  # diamond
        return au + av < 1.0
    if shape == 7:  # triangle, apex up
        return (v > -0.9) & (v < 0.8) & (au < (v + 0.9) * 0.55)
    if shape == 8:  # X
        return (np.abs(au - av) < 0.3) & (box < 0.9)
    # 9: checkerboard
    return (box < 0.9) & ((np.floor((u + 0.9) * 2.2) + np.floor((v + 0.9) * 2.2)) % 2 == 0)


def shape_images(rng: np.random.Generator, labels: np.ndarray, size: int, n_classes: int) -> np.ndarray:
    """Images (N, size, size, 3) uint8 whose class shows as background hue + foreground shape."""
    n = len(labels)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    out = np.empty((n, size, size, 3), np.uint8)
    for i, c in enumerate(labels):
        c = int(c)
        bg_h = c / n_classes + rng.normal(0, 0.22 / n_classes)
        bg = hsv_to_rgb(np.float64(bg_h), np.float64(rng.uniform(0.35, 0.8)), np.float64(rng.uniform(0.45, 0.9)))
        fg = hsv_to_rgb(np.float64(bg_h + 0.5 + rng.normal(0, 0.08)), np.float64(rng.uniform(0.4, 1.0)),
                         np.float64(rng.uniform(0.35, 1.0)))
        # a gentle gradient in a random direction so the background is not flat
        ang = rng.uniform(0, 2 * np.pi)
        grad = ((xx - size / 2) * np.cos(ang) + (yy - size / 2) * np.sin(ang)) / size * rng.uniform(0, 0.35)
        img = np.clip(bg[None, None, :] * (1 + grad[..., None]), 0, 1)
        cx = size / 2 + rng.uniform(-0.13, 0.13) * size
        cy = size / 2 + rng.uniform(-0.13, 0.13) * size
        r = size * rng.uniform(0.23, 0.34)
        m = shape_mask(c, (xx - cx) / r, (yy - cy) / r)
        img[m] = fg
        if rng.random() < 0.3:  # an unrelated small distractor
            dx, dy = rng.uniform(0, size, 2)
            d = np.hypot(xx - dx, yy - dy) < size * rng.uniform(0.05, 0.1)
            img[d] = rng.uniform(0, 1, 3)
        img = img + rng.normal(0, 0.045, img.shape)
        out[i] = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


def marker(folder: Path, dataset: str, seed: int, **counts: int) -> None:
    info = {"generator": GENERATOR, "dataset": dataset, "seed": seed, "counts": counts, "version": 1}
    (folder / MARKER).write_text(json.dumps(info, indent=2) + "\n")


@contextlib.contextmanager
def staged(root: Path, name: str) -> Iterator[Path]:
    """A hidden folder beside where the dataset goes, to write it in; removed if the writing fails, so
    no half-written set is ever left (install() moves a finished one into place)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def install(tmp: Path, final: Path) -> Path:
    """Move a finished dataset into place; replaces an older synthetic set, never real data."""
    if final.exists() or final.is_symlink():
        if not is_synthetic(final):
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(f"{final} exists and is not a synthetic dataset; not replacing it")
        shutil.rmtree(final)
    os.chmod(tmp, 0o755)  # mkdtemp made it private
    os.rename(tmp, final)
    return final


# --------------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------------
class _Py2Pickler(pickle._Pickler):  # type: ignore[misc]
    """Pickles ``bytes`` as Python 2 ``str`` (BINSTRING opcodes), as the CIFAR release was written.

    That is what lets one file serve both ways the release is read: ``pickle.load(f,
    encoding="latin1")`` (torchvision: keys come back as ``"data"``) and ``encoding="bytes"`` (the
    CIFAR web page's recipe: keys come back as ``b"data"``). A Python 3 pickler would write bytes
    that always load as bytes, which torchvision's reader cannot index.
    """

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def dump_py2(obj: object, path: Path) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def write_cifar(root: str | os.PathLike, n_train: int = 2000, n_test: int = 500, seed: int = 0) -> Path:
    """Write ``<root>/cifar-10-batches-py`` in the release layout; returns that folder.

    Five ``data_batch_N`` files share the training set, ``test_batch`` holds the test set,
    ``batches.meta`` the ten real label names; dicts keyed by (Python 2) byte strings
    ``batch_label``, ``labels``, ``data`` (uint8 N x 3072, channel-major 32x32) and ``filenames``,
    pickled with protocol 2 like the release. Classes are balanced and shuffled.
    """
    root = Path(root)
    rng = np.random.default_rng([seed, 10])
    with staged(root, CIFAR10.folder) as tmp:
        def make(n: int) -> tuple[np.ndarray, np.ndarray]:
            labels = rng.permutation(np.arange(n) % 10)
            imgs = shape_images(rng, labels, 32, 10)
            return imgs.transpose(0, 3, 1, 2).reshape(n, 3072), labels

        def batch(label: str, data: np.ndarray, labels: np.ndarray, start: int) -> dict:
            names = [f"{CIFAR_LABEL_NAMES[c]}_s_{start + i:06d}.png".encode() for i, c in enumerate(labels)]
            return {b"batch_label": label.encode(), b"labels": [int(c) for c in labels],
                    b"data": np.ascontiguousarray(data), b"filenames": names}

        data, labels = make(n_train)
        start = 0
        for k, idx in enumerate(np.array_split(np.arange(n_train), 5), 1):
            dump_py2(batch(f"training batch {k} of 5", data[idx], labels[idx], start), tmp / f"data_batch_{k}")
            start += len(idx)
        data, labels = make(n_test)
        dump_py2(batch("testing batch 1 of 1", data, labels, 0), tmp / "test_batch")
        meta = {b"num_cases_per_batch": int(np.ceil(n_train / 5)),
                b"label_names": [n.encode() for n in CIFAR_LABEL_NAMES], b"num_vis": 3072}
        dump_py2(meta, tmp / "batches.meta")
        (tmp / "readme.html").write_text("<p>Synthetic stand-in for CIFAR-10 written by study.data.synthetic.</p>\n")
        marker(tmp, CIFAR10.name, seed, train=n_train, test=n_test)
        return install(tmp, root / CIFAR10.folder)


# --------------------------------------------------------------------------------------------------
# Oxford-IIIT Pet
# --------------------------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int = 1) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a small random grid upsampled bilinearly."""
    out = []
    for _ in range(channels):
        g = (rng.random((cells, cells)) * 255).astype(np.uint8)
        out.append(np.asarray(Image.fromarray(g).resize((w, h), Image.BILINEAR), np.float64) / 255)
    return np.stack(out, -1)


def _pet_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One pet picture (H, W, 3 uint8) and its trimap (H, W uint8: 1 pet, 2 background, 3 border)."""
    h, w = (int(x) for x in rng.integers(int(size * 0.78), int(size * 1.25) + 1, 2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5

    # background: a smooth random-coloured scene with mild noise
    base = hsv_to_rgb(np.float64(rng.random()), np.float64(rng.uniform(0.15, 0.6)), np.float64(rng.uniform(0.35, 0.9)))
    bg = base * (0.65 + 0.7 * _smooth_noise(rng, h, w, 5, 3)) + rng.normal(0, 0.02, (h, w, 3))

    # the pet: an irregular blob, radius modulated by a few harmonics of the angle
    cx, cy = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.35, 0.65)
    rx, ry = min(h, w) * rng.uniform(0.2, 0.34, 2)
    u, v = (xx - cx) / rx, (yy - cy) / ry
    theta = np.arctan2(v, u)
    edge = np.ones_like(theta)
    for k in (2, 3, 4, 5):
        edge += rng.uniform(0, 0.1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    dist = (np.hypot(u, v) - edge) * (rx + ry) / 2  # ~ signed pixel distance to the outline
    inside = dist < 0

    # fur: warm or grey palette, tabby stripes along a random direction, strong fine grain
    if rng.random() < 0.7:
        fur = hsv_to_rgb(np.float64(rng.uniform(0.02, 0.12)), np.float64(rng.uniform(0.3, 0.8)), np.float64(rng.uniform(0.3, 0.95)))
    else:
        fur = np.full(3, rng.uniform(0.15, 0.95))
    ang = rng.uniform(0, np.pi)
    stripes = np.sin(((xx * np.cos(ang) + yy * np.sin(ang)) / rng.uniform(2.0, 5.0)))
    shade = 1 + rng.uniform(0, 0.35) * stripes + rng.normal(0, 0.12, (h, w))
    pet = fur[None, None, :] * shade[..., None]

    img = np.where(inside[..., None], pet, bg)
    img = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    band = rng.uniform(1.0, 2.5)  # the release's "not classified" band is a few pixels wide
    trimap = np.where(np.abs(dist) <= band, 3, np.where(inside, 1, 2)).astype(np.uint8)
    return img, trimap


def write_pets(root: str | os.PathLike, n_trainval: int = 120, n_test: int = 40, size: int = 128, seed: int = 0) -> Path:
    """Write ``<root>/oxford-iiit-pet`` in the release layout; returns that folder.

    ``images/<Name>_<N>.jpg`` (sides vary around ``size``; one is grayscale, as a few real ones are
    not RGB), ``annotations/trimaps/<Name>_<N>.png`` (mode L: 1 pet, 2 background, 3 border band),
    ``annotations/{trainval,test,list}.txt`` with lines ``Name_N class_id species breed_id``:
    class_id 1..37 in case-insensitive alphabetical order of the breeds, species 1 = cat (breed
    name capitalised) / 2 = dog, breed_id counted within the species, as in the release.
    """
    root = Path(root)
    rng = np.random.default_rng([seed, 37])
    with staged(root, OXFORD_PETS.folder) as tmp:
        (tmp / "images").mkdir()
        (tmp / "annotations" / "trimaps").mkdir(parents=True)
        order = sorted(PET_BREEDS, key=str.lower)
        class_id = {b: i + 1 for i, b in enumerate(order)}
        cats = [b for b in order if b[0].isupper()]
        dogs = [b for b in order if b[0].islower()]
        breed_id = {b: i + 1 for i, b in enumerate(cats)} | {b: i + 1 for i, b in enumerate(dogs)}

        n = n_trainval + n_test
        breeds = rng.permutation([PET_BREEDS[i % len(PET_BREEDS)] for i in range(n)])
        counter: dict[str, int] = {}
        names = []
        for b in breeds:
            counter[b] = counter.get(b, 0) + 1
            names.append(f"{b}_{counter[b]}")
        split = {"trainval": names[:n_trainval], "test": names[n_trainval:]}
        gray = split["trainval"][1] if n_trainval > 1 else None

        def line(name: str) -> str:
            b = name.rsplit("_", 1)[0]
            return f"{name} {class_id[b]} {1 if b[0].isupper() else 2} {breed_id[b]}\n"

        for name in names:
            img, trimap = _pet_image(rng, size)
            pic = Image.fromarray(img)
            if name == gray:
                pic = pic.convert("L")
            pic.save(tmp / "images" / f"{name}.jpg", "JPEG", quality=90)
            Image.fromarray(trimap, mode="L").save(tmp / "annotations" / "trimaps" / f"{name}.png")
        for s, members in split.items():
            (tmp / "annotations" / f"{s}.txt").write_text("".join(line(m) for m in sorted(members)))
        header = ("#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n#SPECIES: 1:Cat 2:Dog\n"
                  "#BREED ID: 1-25:Cat 1:12:Dog\n#All images with 1st letter as captial are cat images\n"
                  "#images with small first letter are dog images\n")
        (tmp / "annotations" / "list.txt").write_text(header + "".join(line(m) for m in sorted(names)))
        marker(tmp, OXFORD_PETS.name, seed, trainval=n_trainval, test=n_test)
        return install(tmp, root / OXFORD_PETS.folder)


# --------------------------------------------------------------------------------------------------
# ImageFolder (ILSVRC-style)
# --------------------------------------------------------------------------------------------------
def write_imagefolder(root: str | os.PathLike, n_classes: int = 4, n_train_per_class: int = 20,
                      n_val_per_class: int = 5, size: int = 64, seed: int = 0) -> Path:
    """Write ``<root>/imagenet/{train,val}/<wnid>/*.JPEG``; returns ``<root>/imagenet``.

    Class folders are WordNet-id-like (``n00000001``...), files named as in ILSVRC
    (``<wnid>_<k>.JPEG`` in train, ``ILSVRC2012_val_<k>.JPEG`` in val). Same signal as CIFAR.
    """
    root = Path(root)
    rng = np.random.default_rng([seed, 1000])
    with staged(root, IMAGEFOLDER.folder) as tmp:
        wnids = [f"n{c + 1:08d}" for c in range(n_classes)]
        k_val = 0
        for split, per in (("train", n_train_per_class), ("val", n_val_per_class)):
            labels = rng.permutation(np.arange(per * n_classes) % n_classes)
            imgs = shape_images(rng, labels, size, n_classes)
            counts = [0] * n_classes
            for img, c in zip(imgs, labels):
                folder = tmp / split / wnids[c]
                folder.mkdir(parents=True, exist_ok=True)
                counts[c] += 1
                if split == "train":
                    name = f"{wnids[c]}_{counts[c]}.JPEG"
                else:
                    k_val += 1
                    name = f"ILSVRC2012_val_{k_val:08d}.JPEG"
                Image.fromarray(img).save(folder / name, "JPEG", quality=92)
        marker(tmp, IMAGEFOLDER.name, seed, classes=n_classes, train=n_train_per_class * n_classes,
                val=n_val_per_class * n_classes)
        return install(tmp, root / IMAGEFOLDER.folder)


@dataclass(frozen=True)
class Writer:
    write: Callable[..., Path]
    """``write(root, seed=...)``: the dataset at its default size under ``root``; returns its folder."""
    contents: str
    """What the default size holds, for messages."""


def _elsewhere(module: str) -> Callable[..., Path]:
    """``write`` of a writer module built on the helpers here (imported on call, so no import loop)."""
    return lambda root, **kw: importlib.import_module(module).write(root, **kw)


WRITERS = {
    CIFAR10.name: Writer(write_cifar, "2000 train + 500 test images"),
    OXFORD_PETS.name: Writer(write_pets, "120 trainval + 40 test images with trimaps"),
    IMAGEFOLDER.name: Writer(write_imagefolder, "4 classes, 80 train + 20 val images"),
    CIFAR100.name: Writer(_elsewhere("study.data.synthetic_cifar100"), "100 classes, 2000 train + 500 test images"),
    CUB200.name: Writer(_elsewhere("study.data.synthetic_cub"), "10 classes, 240 train + 60 test images with boxes"),
}


def write_all(root: str | os.PathLike, seed: int = 0) -> dict[str, Path]:
    """Every dataset of the catalog at its default size under ``root``."""
    return {name: writer.write(root, seed=seed) for name, writer in WRITERS.items()}
