"""ImageFolder (ILSVRC layout): ``<root>/imagenet/train/<wnid>/*.JPEG`` and ``<root>/imagenet/val/<wnid>/``.

Read by ``torchvision.datasets.ImageFolder``: construction walks the class folders (the timed
"load"), each item is opened and decoded lazily. ``prepare.sh --imagenet DIR`` points
``<root>/imagenet`` at an extracted ILSVRC ``Data/CLS-LOC`` tree (Kaggle's download as it ships) and
copies its ``LOC_synset_mapping.txt`` beside the links, whence the class names ("n01440764 tench").
Standard ImageNet transforms.
"""
from __future__ import annotations

import os
from pathlib import Path

from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from study.core.config import ConfigError, RunConfig
from study.core.catalog import IMAGEFOLDER
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


def real_files(top: str):
    """(path, real path) of every file under ``top``, following links (prepare.sh links a user's
    ImageNet in) but entering each real folder once: a link loop would otherwise be walked until the
    path is too long, listing the same pictures over and over. One realpath per folder; a file's own
    only when it is a link (the directory entry says so for free)."""
    folders: set[str] = set()
    pending = [top]
    while pending:
        here = pending.pop()
        real = os.path.realpath(here)
        if real in folders:
            continue
        folders.add(real)
        try:
            entries = sorted(os.scandir(here), key=lambda e: e.name)
        except OSError:  # a dangling link to a folder, a folder we may not read
            continue
        subfolders = []
        for e in entries:
            if e.is_dir():  # follows links
                subfolders.append(e.path)
            elif e.is_file():
                yield e.path, os.path.realpath(e.path) if e.is_symlink() else os.path.join(real, e.name)
        pending.extend(reversed(subfolders))  # depth first, in name order, as os.walk would list them


def list_samples(directory: str, class_to_idx: dict[str, int], extensions: tuple[str, ...] | None = None,
                 is_valid_file=None, allow_empty: bool = False) -> list[tuple[str, int]]:
    """ImageFolder's listing, (path, class index) per picture, with each real file once."""
    from torchvision.datasets.folder import has_file_allowed_extension

    valid = is_valid_file or (lambda p: has_file_allowed_extension(p, extensions or ()))
    seen: set[str] = set()
    found: set[str] = set()
    out = []
    for name in sorted(class_to_idx):
        for path, real in real_files(os.path.join(directory, name)):
            if real not in seen and valid(path):
                seen.add(real)
                found.add(name)
                out.append((path, class_to_idx[name]))
    empty = sorted(set(class_to_idx) - found)
    if empty and not allow_empty:
        raise FileNotFoundError(f"Found no valid file for the classes {', '.join(empty)}")
    return out


class ImageFiles(ImageFolder):
    """torchvision's ImageFolder; a file that does not decode is a SampleError naming it; each real
    file once, however links lead to it."""

    make_dataset = staticmethod(list_samples)

    def __getitem__(self, index: int):  # type: ignore[override]
        try:
            return super().__getitem__(index)
        except Exception as e:  # noqa: BLE001 — any decoder error, with the file it came from
            raise unreadable(index, [self.samples[index][0]], e) from e


def _hint(root: str) -> str:
    from study.data.integrity import prepare_hint
    from study.data.prepare_imagenet import find_cls_loc

    if find_cls_loc(Path(root)) is not None:  # --data-root at the user's ImageNet itself
        return (f"{root} is an ImageNet folder itself, not a data root of this tool: link it in with "
                f"./prepare.sh --imagenet {root} and pass --data-root data")
    return prepare_hint(root, "--imagenet IMAGENET_DIR")


def class_names(top: Path, wnids: list[str]) -> list[str]:
    """"n01440764 tench" per class folder when ``top`` holds the LOC_synset_mapping.txt that
    prepare.sh copies there; the folder names otherwise."""
    from study.data.prepare_imagenet import SYNSETS, read_synsets

    if not (top / SYNSETS).is_file():
        return wnids
    names = read_synsets(top / SYNSETS)
    return [names.get(w, w) for w in wnids]


def open_split(cfg: RunConfig, train: bool) -> ImageFolder:
    root = str(cfg.data_root)
    split = "train" if train else "val"
    folder = Path(root) / IMAGEFOLDER.folder / split
    if not folder.is_dir():
        raise ConfigError(f"no ImageFolder {split} set at {folder}; {_hint(root)}")
    try:
        ds = ImageFiles(str(folder), transform=build_transform(cfg.image_size or DEFAULT_SIZE, train))
    except FileNotFoundError as e:  # no class folders, or class folders without images
        raise ConfigError(f"unusable ImageFolder at {folder}: {str(e).splitlines()[0]}; {_hint(root)}") from None
    ds.classes = class_names(folder.parent, ds.classes)  # what reports and predict show; class_to_idx keeps the wnids
    return ds
