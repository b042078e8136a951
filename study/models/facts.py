"""What a toggle may need to know about the model and its inputs to say whether it can apply at all.

A core type below the toggles: the preflight fills it from the model built on meta and one sample of
the dataset (so a toggle that cannot take the model is skipped before any stage starts), and the
stage process fills it again from its own model and batch (the search plans its runs without a
preflight of its own).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelFacts:
    convolutions: int
    """2-D convolution modules in the model (channels-last changes only how they read and write)."""
    input_shape: tuple[int, ...]
    """One sample's input shape, without the batch dimension: (3, 32, 32) for CIFAR, (64,) for tokens."""
    input_dtype: str
    """The input tensor's dtype as torch names it ("torch.float32", "torch.int64")."""

    @property
    def image_batches(self) -> bool:
        """Whether a batch is (N, C, H, W), the rank the channels-last layout is defined for."""
        return len(self.input_shape) == 3

    def describe_input(self) -> str:
        return f"{self.input_dtype.removeprefix('torch.')} samples of shape {self.input_shape}"


def facts_of(model: Any, sample_input: Any) -> ModelFacts:
    """Facts of an nn.Module (any device, meta included) and one sample's input tensor."""
    from torch import nn

    convs = sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules())
    return ModelFacts(convolutions=convs, input_shape=tuple(sample_input.shape), input_dtype=str(sample_input.dtype))
