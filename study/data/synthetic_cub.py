"""A small CUB-200-2011 in the published layout (``<root>/CUB_200_2011/``), with a learnable signal.

``images/<NNN>.<Class>/<Class>_<NNNN>_<id>.jpg`` plus ``images.txt``, ``image_class_labels.txt``,
``train_test_split.txt``, ``classes.txt`` and ``bounding_boxes.txt``, spelled as the release spells
them; the classes are the release's first ones. Each picture is a "bird" (the class's shape in a
colour of its own) at a random place and size on a noisy background of another hue; its bounding box
is the shape's extent, so ``--crop-to-box`` keeps the bird. Sides vary as the release's do, and one
image is grayscale (the release has a few), which the reader converts.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from study.core.catalog import CUB200
from study.data.synthetic import hsv_to_rgb, install, marker, shape_mask, staged

# The release's first classes, as classes.txt names them.
CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross", "004.Groove_billed_Ani",
           "005.Crested_Auklet", "006.Least_Auklet", "007.Parakeet_Auklet", "008.Rhinoceros_Auklet",
           "009.Brewer_Blackbird", "010.Red_winged_Blackbird"]


def _bird(rng: np.random.Generator, c: int, n_classes: int, side: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One picture (H, W, 3 uint8) of class ``c`` and its box (x, y, width, height)."""
    h, w = (int(v) for v in rng.integers(int(side * 0.8), int(side * 1.25) + 1, 2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    hue = c / n_classes
    bg = hsv_to_rgb(np.float64(hue + 0.5 + rng.normal(0, 0.05)), np.float64(rng.uniform(0.2, 0.5)),
                     np.float64(rng.uniform(0.5, 0.9)))
    img = np.clip(bg[None, None] + rng.normal(0, 0.05, (h, w, 3)), 0, 1)
    r = min(h, w) * rng.uniform(0.22, 0.36)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    mask = shape_mask(c, (xx - cx) / r, (yy - cy) / r)
    img[mask] = hsv_to_rgb(np.float64(hue + rng.normal(0, 0.2 / n_classes)), np.float64(rng.uniform(0.6, 1.0)),
                            np.float64(rng.uniform(0.5, 1.0)))
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), box


def write_cub(root: str | os.PathLike, n_classes: int = 10, n_train_per_class: int = 24, n_test_per_class: int = 6,
              side: int = 80, seed: int = 0) -> Path:
    """Write ``<root>/CUB_200_2011``; returns that folder. Ids run in class order, as in the release."""
    root = Path(root)
    rng = np.random.default_rng([seed, 200])
    with staged(root, CUB200.folder) as tmp:
        classes = CLASSES[:n_classes]
        images, labels, split, boxes = [], [], [], []
        image_id = 0
        for c, folder in enumerate(classes):
            (tmp / "images" / folder).mkdir(parents=True)
            name = folder.split(".", 1)[1]
            is_train = rng.permutation([1] * n_train_per_class + [0] * n_test_per_class)
            for k, flag in enumerate(is_train):
                image_id += 1
                pixels, box = _bird(rng, c, n_classes, side)
                rel = f"{folder}/{name}_{k + 1:04d}_{image_id}.jpg"
                pic = Image.fromarray(pixels)
                if image_id == 2:
                    pic = pic.convert("L")
                pic.save(tmp / "images" / rel, "JPEG", quality=90)
                images.append(f"{image_id} {rel}\n")
                labels.append(f"{image_id} {c + 1}\n")
                split.append(f"{image_id} {int(flag)}\n")
                boxes.append(f"{image_id} {box[0]:.1f} {box[1]:.1f} {box[2]:.1f} {box[3]:.1f}\n")
        for name, lines in (("images.txt", images), ("image_class_labels.txt", labels),
                            ("train_test_split.txt", split), ("bounding_boxes.txt", boxes),
                            ("classes.txt", [f"{c + 1} {folder}\n" for c, folder in enumerate(classes)])):
            (tmp / name).write_text("".join(lines))
        marker(tmp, CUB200.name, seed, classes=n_classes, train=n_train_per_class * n_classes,
                test=n_test_per_class * n_classes)
        return install(tmp, root / CUB200.folder)


write = write_cub  # what synthetic.WRITERS calls
