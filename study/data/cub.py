"""CUB-200-2011 as published (``<root>/CUB_200_2011/``), read from its own index files.

Layout (what ``CUB_200_2011.tgz`` extracts)::

    images/<NNN>.<Class_Name>/<Class_Name>_<N>_<M>.jpg
    images.txt              <image_id> <path under images/>
    image_class_labels.txt  <image_id> <class_id>          (1..200)
    train_test_split.txt    <image_id> <is_training_image> (1 train, 0 test)
    classes.txt             <class_id> <NNN>.<Class_Name>
    bounding_boxes.txt      <image_id> <x> <y> <width> <height>   (pixels; read with --crop-to-box)

torchvision has no reader for it, so this one follows the files as published: the split, the labels
(``class_id - 1``) and the class names (``classes.txt`` without the number, "Black_footed_Albatross")
come from the index; each image is opened per item and converted to RGB (a few are grayscale).
``--crop-to-box`` crops each image to its box before the transforms. Transforms are the ImageNet
ones (``imagefolder``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from study.core.config import ConfigError, RunConfig
from study.core.catalog import CUB200
from study.data.imagefolder import MEAN, STD, build_transform  # noqa: F401 — MEAN/STD: the checkpoint's normalisation
from study.data.integrity import prepare_hint, remake_hint
from study.data.samples import unreadable

INDEX_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
BOXES = "bounding_boxes.txt"


@dataclass
class Index:
    """The published index, parsed: one entry per image id, in id order."""

    paths: dict[int, str] = field(default_factory=dict)
    labels: dict[int, int] = field(default_factory=dict)
    train: dict[int, bool] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    boxes: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)


def _rows(text: str, name: str, where: str, width: int, again: str) -> list[list[str]]:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=width - 1) if name == "images.txt" else line.split()
        if len(parts) != width or not parts[0].isdigit():
            raise ConfigError(f"cannot read {where}/{name}: line {n} is {line.strip()[:60]!r}, not {width} fields "
                              f"starting with an id; {again}")
        rows.append(parts)
    return rows


def read_index(read_text: Callable[[str], str], where: str, boxes: bool = False,
               again: str = "extract the dataset again with ./prepare.sh --cub CUB_200_2011.tgz") -> Index:
    """Parse the index files; ``read_text(name)`` returns one file's text. ConfigError (one line) for a
    malformed line, a class id outside classes.txt, or an image missing from one of the files."""
    ix = Index()

    def rows(name: str, width: int = 2) -> list[list[str]]:
        return _rows(read_text(name), name, where, width, again)

    try:
        ix.paths = {int(i): path.strip() for i, path in rows("images.txt")}
        ix.labels = {int(i): int(c) - 1 for i, c in rows("image_class_labels.txt")}
        ix.train = {int(i): f == "1" for i, f in rows("train_test_split.txt")}
        named = sorted((int(c), name) for c, name in rows("classes.txt"))
        if boxes:
            ix.boxes = {int(r[0]): tuple(float(v) for v in r[1:]) for r in rows(BOXES, 5)}  # type: ignore[misc]
    except ValueError as e:  # a number that is not one
        raise ConfigError(f"cannot read the CUB-200-2011 index in {where}: {e}") from None
    if [c for c, _ in named] != list(range(1, len(named) + 1)):
        raise ConfigError(f"{where}/classes.txt does not number its classes 1..{len(named)}; {again}")
    ix.classes = [name.split(".", 1)[-1] for _, name in named]
    for name, table in (("image_class_labels.txt", ix.labels), ("train_test_split.txt", ix.train)) + (
            ((BOXES, ix.boxes),) if boxes else ()):
        lost = sorted(set(ix.paths) - set(table))
        if lost:
            raise ConfigError(f"{where}/{name} has no line for {len(lost)} images of images.txt (first: id {lost[0]}); "
                              f"{again}")
    bad = [i for i, c in ix.labels.items() if not 0 <= c < len(ix.classes)]
    if bad:
        raise ConfigError(f"{where}/image_class_labels.txt gives image {bad[0]} class {ix.labels[bad[0]] + 1}, "
                          f"outside the {len(ix.classes)} classes of classes.txt; {again}")
    return ix


class CUBImages:
    """One split of CUB-200-2011: (transformed image, class index) per item, the file opened per item.
    Picklable (plain attributes), so DataLoader workers receive it as is."""

    def __init__(self, folder: str, ix: Index, train: bool, transform: Callable | None, crop: bool) -> None:
        ids = [i for i in sorted(ix.paths) if ix.train[i] == train]
        self.folder, self.transform, self.classes = folder, transform, ix.classes
        self.samples = [(os.path.join(folder, "images", ix.paths[i]), ix.labels[i]) for i in ids]
        self.targets = [t for _, t in self.samples]
        self.boxes = [ix.boxes[i] for i in ids] if crop else None
        self.class_to_idx = {c: k for k, c in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int):
        from PIL import Image

        with Image.open(self.samples[index][0]) as im:
            img = im.convert("RGB")  # a few of the published images are grayscale
        if self.boxes is not None:
            x, y, w, h = self.boxes[index]
            img = img.crop((int(x), int(y), int(x + max(w, 1)), int(y + max(h, 1))))
        return img

    def __getitem__(self, index: int):
        try:
            img = self.load(index)
        except Exception as e:  # noqa: BLE001 — any decoder error, with the file it came from
            raise unreadable(index, [self.samples[index][0]], e) from e
        return (self.transform(img) if self.transform else img), self.samples[index][1]


def check_folder(root: str) -> Path:
    folder = Path(root) / CUB200.folder
    hint = prepare_hint(root, CUB200.prepare)
    if not folder.is_dir():
        raise ConfigError(f"no {CUB200.title} at {folder}; {hint}")
    missing = [n for n in (*INDEX_FILES, "images") if not (folder / n).exists()]
    if missing:
        raise ConfigError(f"incomplete {CUB200.title} at {folder} (missing {', '.join(missing)}); {hint}")
    return folder


def open_split(cfg: RunConfig, train: bool) -> CUBImages:
    folder = check_folder(str(cfg.data_root))
    again = remake_hint(cfg.data_root, CUB200.name)
    if cfg.crop_to_box and not (folder / BOXES).is_file():
        raise ConfigError(f"--crop-to-box needs {folder / BOXES}, which is missing; {again}, or drop --crop-to-box")
    ix = read_index(lambda name: (folder / name).read_text(encoding="utf-8", errors="replace"), str(folder),
                    boxes=cfg.crop_to_box, again=again)
    ds = CUBImages(str(folder), ix, train, build_transform(cfg.image_size or CUB200.default_size, train),
                   cfg.crop_to_box)
    lost = [p for p, _ in ds.samples if not os.path.isfile(p)]
    if lost:
        raise ConfigError(f"{len(lost)} images listed in {folder}/images.txt are missing (first: {lost[0]}); {again}")
    return ds
