"""channels_last: NHWC memory layout for the model's weights and every input batch.

Convolution kernels (cuDNN on tensor cores, oneDNN on CPU) prefer NHWC; with the default NCHW layout
they transpose internally on every call. The worker converts the model once before the optimizer is
built, and the loop converts each batch after the host→device copy.
"""
from __future__ import annotations

import torch

from optimizations.base import ORDER_MEMORY_FORMAT, Optimization, TrainContext, register


def apply_channels_last(ctx: TrainContext) -> None:
    ctx.memory_format = torch.channels_last


@register
class ChannelsLast(Optimization):
    name = "channels_last"
    description = "NHWC memory layout for weights and input batches (faster convolutions)"
    order = ORDER_MEMORY_FORMAT
    prior = 30
    addresses = {"compute-bound": "the channels-last (NHWC) layout is the one the fastest convolution kernels read"}

    def setup(self, ctx: TrainContext) -> None:
        apply_channels_last(ctx)
