"""ImageFolder (ILSVRC layout): ``<root>/imagenet/train/<wnid>/*.JPEG`` and ``<root>/imagenet/val/<wnid>/``.

Read by ``torchvision.datasets.ImageFolder``: construction walks the class folders (the timed
"load"), each item is opened and decoded lazily. ``prepare.sh --imagenet ILSVRC_DIR`` points
``<root>/imagenet`` at an extracted ILSVRC ``Data/CLS-LOC`` tree. Standard ImageNet transforms.
"""
from __future__ import annotations

import os
from pathlib import Path

from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from study.config import ConfigError, RunConfig
from study.catalog import IMAGEFOLDER
from study.data.samples import unreadable

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = IMAGEFOLDER.default_size


def build_transform(size: int, train: bool) -> T.Compose:
    """train: RandomResizedCrop + flip; val: Resize(size * 256/224) + CenterCrop. Then normalise."""
    if train:
        ops = [T.RandomResizedCrop(size, antialias=True), T.RandomHorizontalFlip()]
    else:
        ops = [T.Resize(round(size * 256 / 224), antialias=True), T.CenterCrop(size)]
    return T.Compose(ops + [T.ToTensor(), T.Normalize(MEAN, STD)])


class ImageFiles(ImageFolder):
    """torchvision's ImageFolder; a file that does not decode is a SampleError naming it."""

    def __getitem__(self, index: int):  # type: ignore[override]
        try:
            return super().__getitem__(index)
        except Exception as e:  # noqa: BLE001 — any decoder error, with the file it came from
            raise unreadable(index, [self.samples[index][0]], e) from e


def open_split(cfg: RunConfig, train: bool) -> ImageFolder:
    root = str(cfg.data_root)
    split = "train" if train else "val"
    folder = Path(root) / IMAGEFOLDER.folder / split
    r = "" if os.path.normpath(root) == "data" else f" --root {root}"
    hint = f"run ./prepare.sh{r} --synthetic or ./prepare.sh{r} --imagenet ILSVRC_DIR"
    if not folder.is_dir():
        raise ConfigError(f"no ImageFolder {split} set at {folder}; {hint}")
    try:
        ds = ImageFiles(str(folder), transform=build_transform(cfg.image_size or DEFAULT_SIZE, train))
    except FileNotFoundError as e:  # no class folders, or class folders without images
        raise ConfigError(f"unusable ImageFolder at {folder}: {str(e).splitlines()[0]}; {hint}") from None
    return ds
