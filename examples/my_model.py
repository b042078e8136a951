"""A model of your own for the study: copy this file, change the network, keep the builder's signature.

    python -m study --model examples/my_model.py:build --dry-run

The study calls `build(num_classes)` in every stage process (and `study predict` calls it again to
rebuild a checkpoint's model), passing `task` ("classify" or "segment") and `image_size` (the side of
the input pictures) as keyword arguments when the builder accepts them. It must return an nn.Module:
for classify, logits of shape (batch, num_classes); for segment, (batch, num_classes, H, W) or
{"out": ...} as torchvision's segmentation models return. Weights come from `--weights FILE` (matched
by name and shape; the tensors whose shape depends on num_classes are the head and start fresh).
"""
from __future__ import annotations

from torch import nn


def block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int, segment: bool = False, width: int = 32) -> None:
        super().__init__()
        self.segment = segment
        self.features = nn.Sequential(block(3, width), block(width, 2 * width, 2), block(2 * width, 4 * width, 2))
        if segment:
            self.head = nn.Sequential(nn.Conv2d(4 * width, num_classes, 1),
                                      nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False))
        else:
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


def build(num_classes: int, task: str = "classify", image_size: int = 0) -> nn.Module:
    """The study's entry point: a small CNN with `num_classes` outputs for `task`."""
    return SmallCNN(num_classes, segment=task == "segment")


def build_mlp(num_classes: int, image_size: int = 32) -> nn.Module:
    """A model without a convolution (Grad-CAM has nothing to look at: the pictures say so and skip)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size * image_size, 64), nn.ReLU(),
                         nn.Linear(64, num_classes))
