"""cudnn: cuDNN autotuning (benchmark mode) and TF32 math for float32 matmuls and convolutions.

benchmark=True times the available convolution algorithms for each new input shape once and keeps
the fastest; TF32 runs float32 matmuls/convolutions on tensor cores with a 10-bit mantissa. Both are
process-wide flags, which is why every stage runs in a fresh process.
"""
from __future__ import annotations

import torch

from optimizations.base import Env, Optimization, TrainContext, register


def enable_cudnn_fast_paths() -> dict[str, str]:
    """Turn on cuDNN benchmark mode and TF32; returns what was set (for the stage's notes)."""
    torch.backends.cudnn.benchmark = True
    matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and conv is not None and hasattr(conv, "fp32_precision"):
        # torch >= 2.9 API; the allow_tf32 flags still work but are deprecated there.
        matmul.fp32_precision = "tf32"
        conv.fp32_precision = "tf32"
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return {"cudnn.benchmark": "True", "fp32 matmul/conv": "tf32"}


@register
class Cudnn(Optimization):
    name = "cudnn"
    description = "cuDNN benchmark (autotuned conv algorithms) + TF32 matmul/conv"
    prior = 60

    def applicable(self, env: Env) -> tuple[bool, str]:
        if env.device_type != "cuda":
            return False, "cuDNN autotuning and TF32 exist only on CUDA devices; none here"
        return True, ""

    def setup(self, ctx: TrainContext) -> None:
        ctx.notes["cudnn"] = enable_cudnn_fast_paths()
