"""A user's dataset and task for the plug-in tests: 3x16x16 pictures whose top or bottom half is bright
(class 0 or 1) under noise, a signal a small convnet learns in a few steps."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from study.train.tasks import Classification


class Halves(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 2, (n,), generator=g)
        self.noise = torch.randn(n, 3, 16, 16, generator=g) * 0.5

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.noise[i].clone()
        y = int(self.labels[i])
        if y == 0:
            x[:, :8] += 1.5
        else:
            x[:, 8:] += 1.5
        return x, y


def halves(cfg=None):
    """(train, val): no classes given, so the study counts them from the targets (2)."""
    return Halves(512, 0), Halves(128, 1)


def halves_named():
    return Halves(512, 0), Halves(128, 1), ["top", "bottom"]


class MyClassification(Classification):
    """A plug-in task: the built-in loss under another name, registered by reference."""

    name = "my-classify"


# --- bad plug-ins ------------------------------------------------------------------------------------
def raises(cfg=None):
    raise RuntimeError("no such table: samples")


def returns_one():
    return Halves(8, 0)


def not_map_style():
    return iter([1, 2]), Halves(8, 1)


def bad_items():
    return list(range(512)), list(range(64))  # numbers, not (input, target) pairs


def label_out_of_range():
    return Halves(512, 0), Halves(64, 1), ["only-one-class"]


NOT_A_FUNCTION = 3


class NotATask:
    pass
