"""channels_last: NHWC memory layout for the model's weights and every input batch.

Convolution kernels (cuDNN on tensor cores, oneDNN on CPU) prefer NHWC; with the default NCHW layout
they transpose internally on every call. The worker converts the model once before the optimizer is
built, and the loop converts each batch after the host→device copy.
"""
from __future__ import annotations

import torch

from optimizations.base import ORDER_MEMORY_FORMAT, ModelFacts, Optimization, TrainContext, register


def apply_channels_last(ctx: TrainContext) -> None:
    ctx.memory_format = torch.channels_last


@register
class ChannelsLast(Optimization):
    name = "channels_last"
    description = "NHWC memory layout for weights and input batches (faster convolutions)"
    order = ORDER_MEMORY_FORMAT
    prior = 30
    addresses = {"compute-bound": "the channels-last (NHWC) layout is the one the fastest convolution kernels read"}

    def fits(self, model: ModelFacts) -> tuple[bool, str]:
        # The layout is defined for 4-D batches only (a token batch would fail in .contiguous()), and
        # without a convolution no kernel reads the layout: the stage would measure nothing but noise.
        if not model.image_batches:
            return False, f"its inputs are {model.describe_input()}, not images: the channels-last layout needs (N, C, H, W) batches"
        if not model.convolutions:
            return False, "it has no 2-D convolution, the only layers whose kernels read the channels-last layout"
        return True, ""

    def setup(self, ctx: TrainContext) -> None:
        apply_channels_last(ctx)
