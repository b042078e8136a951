"""The datasets this tool reads: one row each, the only place their folders, readers and sizes live.

Torch-free and free of other ``study`` imports, so anything (the S3 package, ``prepare.sh``, the
synthetic writers, toggles that need a default image size) can read it without pulling in a reader.
``study.core.config`` derives its names and tasks from these rows; a test holds the two together.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dataset:
    name: str
    """What ``--dataset`` takes."""
    folder: str
    """Folder under the data root (or key folder under an s3:// prefix), the release's own name."""
    reader: str
    """Module with ``open_split(cfg, train)`` for a local folder; imported on use (it pulls in torch)."""
    title: str
    """How messages name the dataset."""
    default_size: int
    """Input side in pixels when ``--image-size`` is 0."""
    task: str
    """The task its labels serve."""
    classes: tuple[str, ...] = ()
    """Fixed class names (segmentation: what the mask values mean); empty: read from the data."""
    prepare: str = ""
    """What ``prepare.sh`` takes to prepare the published download (hints name it)."""


CIFAR10 = Dataset("cifar10", "cifar-10-batches-py", "study.data.cifar", "CIFAR-10", 32, "classify",
                  prepare="--cifar cifar-10-python.tar.gz")
CIFAR100 = Dataset("cifar100", "cifar-100-python", "study.data.cifar100", "CIFAR-100", 32, "classify",
                   prepare="--cifar cifar-100-python.tar.gz")
CUB200 = Dataset("cub200", "CUB_200_2011", "study.data.cub", "CUB-200-2011", 224, "classify",
                 prepare="--cub CUB_200_2011.tgz")
OXFORD_PETS = Dataset("oxford-pets", "oxford-iiit-pet", "study.data.pets", "Oxford-IIIT Pet", 256, "segment",
                      classes=("background", "pet"), prepare="--pets images.tar.gz annotations.tar.gz")
IMAGEFOLDER = Dataset("imagefolder", "imagenet", "study.data.imagefolder", "ImageFolder", 224, "classify",
                      prepare="--imagenet IMAGENET_DIR")

DATASETS = (CIFAR10, OXFORD_PETS, IMAGEFOLDER, CIFAR100, CUB200)
BY_NAME = {d.name: d for d in DATASETS}
DEFAULT_SIZE = {d.name: d.default_size for d in DATASETS}


def get(name: str) -> Dataset:
    """The row of ``name`` (RunConfig has already refused unknown names)."""
    return BY_NAME[name]
