"""amp: automatic mixed precision (torch.autocast) with a grad scaler where fp16 needs one.

Inside `ctx.autocast()` matmuls and convolutions run in bf16/fp16 while reductions and the loss stay
in float32. fp16's narrow exponent range needs loss scaling (GradScaler) to keep small gradients from
flushing to zero; bf16 has float32's range and needs none. Default: bf16 on CPU and on GPUs that
support it natively, fp16 on older GPUs. fp16 autocast on a CPU is not offered: CPUs have no fast
fp16 matmul path, so it measures an emulation rather than an optimization.
"""
from __future__ import annotations

import functools

import torch

from optimizations.base import ORDER_PRECISION, Env, Optimization, TrainContext, register
from study.core.config import ConfigError

# Names of torch dtypes, as the values of the toggle spell them.
DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def default_dtype(env: Env) -> str:
    if env.device_type == "cuda" and not env.bf16_native:
        return "fp16"
    return "bf16"


def apply_amp(ctx: TrainContext, dtype: str) -> None:
    """Make `ctx.autocast()` enter autocast in `dtype` on ctx's device; fp16 on CUDA gets a scaler."""
    device_type = ctx.device.type
    ctx.autocast = functools.partial(torch.autocast, device_type=device_type, dtype=getattr(torch, DTYPES[dtype]))
    ctx.scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "fp16" and device_type == "cuda"))
    ctx.notes["amp"] = dtype + (" + GradScaler" if ctx.scaler.is_enabled() else "")
    if dtype == "bf16" and device_type == "cpu":
        ctx.notes["amp_bf16_native"] = ctx.env.bf16_native
        if not ctx.env.bf16_native:
            ctx.notes["amp"] += " (no AVX512-BF16/AMX on this CPU: bf16 is emulated, expect it slower than fp32)"


@register
class Amp(Optimization):
    name = "amp"
    description = "mixed precision: torch.autocast (bf16 or fp16) + GradScaler for fp16"
    value_help = "bf16|fp16"
    order = ORDER_PRECISION
    prior = 10
    addresses = {"compute-bound": "bf16/fp16 runs it on faster units and moves half the bytes",
                 "memory-bound": "16-bit activations take about half the memory (else lower --batch-size)"}

    @classmethod
    def search_values(cls, env: Env) -> list[str | None]:
        if env.device_type == "cuda":
            return ["bf16", "fp16"] if env.bf16_native else ["fp16"]
        # Without AVX512-BF16/AMX, bf16 is emulated and slower than fp32; fp16 has no fast CPU path at all.
        return ["bf16"] if env.bf16_native else []

    def parse_value(self, value: str | None) -> str | None:
        if value is not None and value not in DTYPES:
            raise ConfigError(f"bad value for amp: {value!r}; expected one of: {', '.join(DTYPES)}")
        return value

    def applicable(self, env: Env) -> tuple[bool, str]:
        dtype = self.value or default_dtype(env)
        if dtype == "fp16" and env.device_type != "cuda":
            return False, "fp16 autocast needs a CUDA device (CPUs have no fast fp16 path); use amp=bf16"
        if dtype == "bf16" and env.device_type == "cuda" and not env.bf16_native:
            return False, "this GPU has no native bf16; use amp=fp16"
        return True, ""

    def caveat(self, env: Env) -> str:
        if (self.value or default_dtype(env)) == "bf16" and env.device_type == "cpu" and not env.bf16_native:
            return "no AVX512-BF16/AMX on this CPU: bf16 is emulated, expect it slower than fp32"
        return ""

    def setup(self, ctx: TrainContext) -> None:
        apply_amp(ctx, self.value or default_dtype(ctx.env))
