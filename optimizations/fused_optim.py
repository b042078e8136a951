"""fused_optim: a fused (or multi-tensor) optimizer step, nothing else.

The plain SGD step loops over parameters in Python, launching a few small kernels per tensor.
`fused=True` does the whole update in one kernel per dtype/device group; `foreach=True` batches the
per-tensor ops into multi-tensor kernels. Fused SGD exists on CUDA and, in recent torch, on CPU; the
support is probed rather than assumed, and foreach is the fallback. Gradients are dropped with
`zero_grad()`'s default (set_to_none=True) in every stage, the baseline included, as the canonical
loop does: this toggle changes only the optimizer's kernel.
"""
from __future__ import annotations

import functools

import torch

from optimizations.base import Optimization, TrainContext, register


@functools.lru_cache(maxsize=None)
def fused_supported(device_type: str) -> bool:
    """Whether torch.optim.SGD(fused=True) builds and steps on this device type."""
    try:
        p = torch.nn.Parameter(torch.zeros(2, device=device_type))
        p.grad = torch.ones_like(p)
        torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=1e-4, fused=True).step()
        return True
    except (RuntimeError, ValueError, TypeError):
        return False


def fused_optimizer_kwargs(device_type: str) -> dict[str, bool]:
    return {"fused": True} if fused_supported(device_type) else {"foreach": True}


@register
class FusedOptim(Optimization):
    name = "fused_optim"
    description = "fused optimizer step (foreach where fused is missing)"
    prior = 70
    addresses = {"host-bound": "one foreach/fused kernel replaces a Python loop and a launch per parameter",
                 "optimizer-heavy": "one foreach/fused kernel updates all parameters instead of one loop per parameter"}

    def setup(self, ctx: TrainContext) -> None:
        ctx.optimizer_kwargs = {**ctx.optimizer_kwargs, **fused_optimizer_kwargs(ctx.device.type)}
        kind = next(iter(ctx.optimizer_kwargs)) if ctx.optimizer_kwargs else "plain"
        ctx.notes["fused_optim"] = f"SGD {kind}=True"
