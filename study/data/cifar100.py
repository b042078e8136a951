"""CIFAR-100 python release (``<root>/cifar-100-python/``: ``train``, ``test``, ``meta``), read by
torchvision's own ``CIFAR100`` reader.

The same rules as CIFAR-10 (``cifar``): the official MD5s are verified unless the folder is marked
``SYNTHETIC`` or ``UNVERIFIED``, every pickle vetted when they are not. The labels are the release's
100 ``fine_labels`` (torchvision's choice), named by ``meta``'s ``fine_label_names``; with
``--coarse-labels`` the 20 ``coarse_labels`` superclasses, named by ``coarse_label_names``.
"""
from __future__ import annotations

import os

from torchvision.datasets import CIFAR100

from study.core.config import RunConfig
from study.core.catalog import CIFAR100 as ENTRY
from study.data.cifar import MarkerAware, RestrictedUnpickler, open_release

# Per-channel statistics of the release's training images.
MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)


class CIFAR100Batches(MarkerAware, CIFAR100):
    """torchvision's CIFAR100 (fine labels), marker-aware."""

    dataset = ENTRY.name


class CIFAR100Coarse(CIFAR100Batches):
    """The same files with the 20 superclasses as targets and class names."""

    meta = {**CIFAR100.meta, "key": "coarse_label_names"}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # torchvision keeps only the fine labels; the coarse ones sit beside them in the same files.
        self.targets = []
        for name, _ in self.train_list if self.train else self.test_list:
            with open(os.path.join(self.root, self.base_folder, name), "rb") as f:
                self.targets.extend(RestrictedUnpickler(f, encoding="latin1").load()["coarse_labels"])


def open_split(cfg: RunConfig, train: bool) -> CIFAR100Batches:
    make = CIFAR100Coarse if cfg.coarse_labels else CIFAR100Batches
    return open_release(cfg, train, make, MEAN, STD)  # type: ignore[return-value]
