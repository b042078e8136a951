"""Oxford-IIIT Pet segmentation (``<root>/oxford-iiit-pet/``), read by torchvision's own reader.

Layout: ``images/<Name>_<N>.jpg``, ``annotations/trimaps/<Name>_<N>.png``,
``annotations/trainval.txt`` and ``annotations/test.txt`` (lines ``Name_N class_id species
breed_id``). ``torchvision.datasets.OxfordIIITPet(root, split, target_types="segmentation")``
lists a split from its text file and opens image and trimap per item (lazily), converting every
image to RGB (a few real ones are grayscale/CMYK/RGBA).

Targets. The release trimaps hold 1 = pet (foreground), 2 = background, 3 = border ("not
classified", a band a few pixels wide along the outline). Training uses two classes plus an ignored
band::

    trimap 1 (pet)        -> 1
    trimap 2 (background) -> 0
    trimap 3 (border)     -> 255  (ignore_index of the loss and the IoU metric)
    anything else         -> 255  (but the reader refuses such a trimap: see check_trimap)

Transforms are joint: image (bilinear) and mask (nearest, so no new label values appear) are resized
to a fixed ``size x size`` (default 256); training adds one random horizontal flip applied to both.
The image is then normalised with ImageNet statistics (the backbones are ImageNet models).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets import OxfordIIITPet
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from study.core.config import ConfigError, RunConfig
from study.core.catalog import OXFORD_PETS
from study.data.integrity import prepare_hint, remake_hint
from study.data.samples import unreadable

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = OXFORD_PETS.default_size
CLASSES = list(OXFORD_PETS.classes)
NUM_CLASSES = len(CLASSES)
IGNORE_INDEX = 255

# trimap value -> training label (see module docstring)
TRIMAP_LUT = np.full(256, IGNORE_INDEX, np.uint8)
TRIMAP_LUT[1] = 1
TRIMAP_LUT[2] = 0
TRIMAP_LUT[3] = IGNORE_INDEX


def trimap_to_mask(trimap: Image.Image) -> torch.Tensor:
    """Trimap PIL image -> LongTensor HxW with values in {0, 1, 255}."""
    a = np.asarray(trimap)  # mode L or P: the stored values are the trimap codes
    if a.ndim == 3:
        a = a[..., 0]
    return torch.from_numpy(TRIMAP_LUT[a].astype(np.int64))


def check_trimap(trimap: Image.Image) -> None:
    """ValueError unless every value is a trimap code (1, 2, 3). A mask in another convention (0/1,
    0/255) would otherwise map to "ignored" everywhere and train on nothing."""
    a = np.asarray(trimap)
    if a.size and (a.min() < 1 or a.max() > 3):
        bad = sorted(set(np.unique(a).tolist()) - {1, 2, 3})
        raise ValueError(f"trimap values {bad[:5]} outside 1-3 (1 pet, 2 background, 3 border): not an "
                         f"Oxford-IIIT Pet trimap")


class PetFiles(OxfordIIITPet):
    """torchvision's OxfordIIITPet; an image or trimap that cannot be read is a SampleError naming both files."""

    def __getitem__(self, idx: int):  # type: ignore[override]
        try:
            return super().__getitem__(idx)
        except Exception as e:  # noqa: BLE001 — any decoder or trimap error, with its files
            raise unreadable(idx, [self._images[idx], self._segs[idx]], e) from e


class JointTransform:
    """(PIL image, PIL trimap) -> (normalised float tensor 3xSxS, LongTensor SxS). Picklable."""

    def __init__(self, size: int = DEFAULT_SIZE, train: bool = False) -> None:
        self.size = size
        self.train = train

    def __call__(self, image: Image.Image, trimap: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        check_trimap(trimap)
        if image.mode != "RGB":  # torchvision's reader converts already; keep the guarantee here too
            image = image.convert("RGB")
        hw = [self.size, self.size]
        image = F.resize(image, hw, InterpolationMode.BILINEAR, antialias=True)
        trimap = F.resize(trimap, hw, InterpolationMode.NEAREST)
        if self.train and torch.rand(()) < 0.5:
            image, trimap = F.hflip(image), F.hflip(trimap)
        x = F.normalize(F.to_tensor(image), MEAN, STD)
        return x, trimap_to_mask(trimap)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, train={self.train})"


def check_folder(root: str | os.PathLike) -> None:
    root = str(root)
    folder = Path(root) / OXFORD_PETS.folder
    hint = prepare_hint(root, OXFORD_PETS.prepare)
    if not folder.is_dir():
        raise ConfigError(f"no Oxford-IIIT Pet at {folder}; {hint}")
    need = [folder / "images", folder / "annotations" / "trimaps",
            folder / "annotations" / "trainval.txt", folder / "annotations" / "test.txt"]
    missing = [str(p.relative_to(folder)) for p in need if not p.exists()]
    if missing:
        raise ConfigError(f"incomplete Oxford-IIIT Pet at {folder} (missing {', '.join(missing)}); {hint}")


def open_split(cfg: RunConfig, train: bool) -> OxfordIIITPet:
    check_folder(cfg.data_root)
    size = cfg.image_size or DEFAULT_SIZE
    split = "trainval" if train else "test"
    folder = Path(cfg.data_root) / OXFORD_PETS.folder
    try:
        ds = PetFiles(cfg.data_root, split=split, target_types="segmentation",
                      transforms=JointTransform(size, train), download=False)
    except ValueError as e:  # a malformed split-file line
        raise ConfigError(f"cannot read the Oxford-IIIT Pet split files in {folder}: {e} (lines are \"Name_N class_id "
                          f"species breed_id\"); {remake_hint(cfg.data_root, OXFORD_PETS.name)}") from None
    check_listed(folder, split, [*ds._images, *ds._segs], str(cfg.data_root))
    return ds


def check_listed(folder: Path, split: str, listed: list, root: str, shown: int = 3) -> None:
    """Every file the split list names exists: two folder listings, no file opened. Found here, a
    missing picture is one line before any stage starts instead of a failed stage."""
    present = {sub: set(os.listdir(folder / sub)) for sub in ("images", "annotations/trimaps")}
    missing = [p for p in map(Path, listed)
               if p.name not in present["images" if p.parent.name == "images" else "annotations/trimaps"]]
    if missing:
        names = ", ".join(os.path.relpath(p, folder) for p in missing[:shown])
        more = f" and {len(missing) - shown} more" if len(missing) > shown else ""
        r = "" if os.path.normpath(root) == "data" else f" --root {root}"
        raise ConfigError(f"annotations/{split}.txt of the Oxford-IIIT Pet at {folder} lists {len(missing)} "
                          f"file{'s' if len(missing) > 1 else ''} not there: {names}{more}; restore them, or prepare the dataset again from its archives "
                          f"with ./prepare.sh{r} --pets images.tar.gz annotations.tar.gz")
