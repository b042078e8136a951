"""dp: single-process multi-GPU data parallelism (nn.DataParallel).

One process scatters each batch over the visible GPUs, replicates the model every step and gathers
outputs on GPU 0. Kept as the classic baseline against DDP, which it usually loses to (GIL, replication
per step, GPU 0 imbalance).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from optimizations.base import ORDER_PARALLEL, Env, Optimization, TrainContext, register


def wrap_data_parallel(model: nn.Module, device_index: int | None = None) -> nn.DataParallel:
    return nn.DataParallel(model, output_device=device_index)


@register
class DataParallel(Optimization):
    name = "dp"
    description = "nn.DataParallel over all visible GPUs in one process"
    conflicts = ("ddp",)
    order = ORDER_PARALLEL
    prior = 90

    def applicable(self, env: Env) -> tuple[bool, str]:
        if env.device_type != "cuda" or env.cuda_count < 2:
            return False, f"DataParallel needs at least 2 CUDA GPUs; this machine has {env.cuda_count}"
        return True, ""

    def wrap_model(self, model: Any, ctx: TrainContext) -> Any:
        ctx.notes["dp"] = f"{ctx.env.cuda_count} GPUs"
        return wrap_data_parallel(model, ctx.device.index)
