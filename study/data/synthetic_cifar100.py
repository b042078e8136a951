"""A small CIFAR-100 in the release layout (``<root>/cifar-100-python/``), with a learnable signal.

``train`` and ``test`` are dicts keyed by (Python 2) byte strings ``filenames``, ``batch_label``,
``fine_labels``, ``coarse_labels`` and ``data`` (uint8 N x 3072, channel-major 32x32); ``meta``
holds ``fine_label_names`` and ``coarse_label_names``; pickled with protocol 2 like the release, so
``torchvision.datasets.CIFAR100`` reads it once the MD5 check is skipped for the ``SYNTHETIC``
marker. The class names and the fine-to-coarse grouping are the release's.

The signal: the background hue says the superclass (20 hues), the shape says which of its five
classes (disc, square, ring, two kinds of stripes), so both label sets are learnable.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from study.core.catalog import CIFAR100
from study.data.synthetic import dump_py2, install, marker, staged, shape_images

# The release's superclasses, each with its five classes (alphabetical, as the release orders them).
SUPERCLASSES = {
    "aquatic_mammals": "beaver dolphin otter seal whale",
    "fish": "aquarium_fish flatfish ray shark trout",
    "flowers": "orchid poppy rose sunflower tulip",
    "food_containers": "bottle bowl can cup plate",
    "fruit_and_vegetables": "apple mushroom orange pear sweet_pepper",
    "household_electrical_devices": "clock keyboard lamp telephone television",
    "household_furniture": "bed chair couch table wardrobe",
    "insects": "bee beetle butterfly caterpillar cockroach",
    "large_carnivores": "bear leopard lion tiger wolf",
    "large_man-made_outdoor_things": "bridge castle house road skyscraper",
    "large_natural_outdoor_scenes": "cloud forest mountain plain sea",
    "large_omnivores_and_herbivores": "camel cattle chimpanzee elephant kangaroo",
    "medium_mammals": "fox porcupine possum raccoon skunk",
    "non-insect_invertebrates": "crab lobster snail spider worm",
    "people": "baby boy girl man woman",
    "reptiles": "crocodile dinosaur lizard snake turtle",
    "small_mammals": "hamster mouse rabbit shrew squirrel",
    "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "vehicles_1": "bicycle bus motorcycle pickup_truck train",
    "vehicles_2": "lawn_mower rocket streetcar tank tractor",
}
COARSE_NAMES = list(SUPERCLASSES)
FINE_NAMES = sorted(name for members in SUPERCLASSES.values() for name in members.split())
COARSE_OF = {name: c for c, members in enumerate(SUPERCLASSES.values()) for name in members.split()}
MEMBER_OF = {name: k for members in SUPERCLASSES.values() for k, name in enumerate(members.split())}


def signal_labels(fine: np.ndarray) -> np.ndarray:
    """Labels for ``shape_images`` that draw superclass c's hue (c/20, classes 10 apart of 200) and
    member k's shape (shape k)."""
    return np.array([COARSE_OF[FINE_NAMES[f]] * 10 + MEMBER_OF[FINE_NAMES[f]] for f in fine])


def write_cifar100(root: str | os.PathLike, n_train: int = 2000, n_test: int = 500, seed: int = 0) -> Path:
    """Write ``<root>/cifar-100-python`` (balanced, shuffled classes); returns that folder."""
    root = Path(root)
    rng = np.random.default_rng([seed, 100])
    with staged(root, CIFAR100.folder) as tmp:
        for name, n, label in (("train", n_train, "training batch 1 of 1"), ("test", n_test, "testing batch 1 of 1")):
            fine = rng.permutation(np.arange(n) % 100)
            imgs = shape_images(rng, signal_labels(fine), 32, 200)
            coarse = [COARSE_OF[FINE_NAMES[f]] for f in fine]
            files = [f"{FINE_NAMES[f]}_s_{i:06d}.png".encode() for i, f in enumerate(fine)]
            dump_py2({b"filenames": files, b"batch_label": label.encode(), b"fine_labels": [int(f) for f in fine],
                       b"coarse_labels": coarse, b"data": np.ascontiguousarray(imgs.transpose(0, 3, 1, 2).reshape(n, 3072))},
                      tmp / name)
        dump_py2({b"fine_label_names": [n.encode() for n in FINE_NAMES],
                   b"coarse_label_names": [n.encode() for n in COARSE_NAMES]}, tmp / "meta")
        marker(tmp, CIFAR100.name, seed, train=n_train, test=n_test)
        return install(tmp, root / CIFAR100.folder)


write = write_cifar100  # what synthetic.WRITERS calls
