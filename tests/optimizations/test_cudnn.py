import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from optimizations.base import parse_stack
from tests.optimizations.helpers import cpu_env, cuda_env

REPO = Path(__file__).resolve().parents[2]

# The flags are process-wide, so the toggle is observed in a fresh interpreter (as a stage runs it):
# the state before and after enable_cudnn_fast_paths(), and on a TF32-capable GPU what a float32
# matmul really computes.
PROBE = r"""
import json, torch
from optimizations.cudnn import enable_cudnn_fast_paths

def flags():
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9; reading the legacy flags there can raise
        return {"benchmark": conv.benchmark, "matmul_tf32": matmul.fp32_precision == "tf32",
                "conv_tf32": conv.conv.fp32_precision == "tf32"}
    return {"benchmark": conv.benchmark, "matmul_tf32": matmul.allow_tf32, "conv_tf32": conv.allow_tf32}

def matmul_error():
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8:
        return None
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(1024, 1024, device="cuda", generator=g)
    b = torch.randn(1024, 1024, device="cuda", generator=g)
    ref = a.double() @ b.double()
    return ((a @ b).double() - ref).abs().max().item() / ref.abs().max().item()

before, err_before = flags(), matmul_error()
notes = enable_cudnn_fast_paths()
print(json.dumps({"before": before, "after": flags(), "notes": notes,
                  "err_before": err_before, "err_after": matmul_error()}))
"""


def _probe() -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_cuda_only():
    (t,) = parse_stack("cudnn")
    ok, reason = t.applicable(cpu_env())
    assert not ok and "CUDA" in reason
    assert t.applicable(cuda_env())[0]


def test_turns_on_benchmark_and_tf32_in_a_fresh_process():
    """The flags can be set (and read) without a GPU; they start off in a fresh process, so the
    change is the toggle's own."""
    out = _probe()
    assert out["before"]["benchmark"] is False and out["before"]["matmul_tf32"] is False
    assert out["after"] == {"benchmark": True, "matmul_tf32": True, "conv_tf32": True}
    assert out["notes"]["fp32 matmul/conv"] == "tf32"


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8,
                    reason="TF32 math needs an Ampere or later CUDA GPU")
def test_float32_matmul_really_runs_in_tf32_on_the_gpu():
    """TF32 keeps 10 mantissa bits: a float32 matmul's error against float64 grows from ~1e-6 to ~1e-3."""
    out = _probe()
    assert out["err_before"] < 1e-4 < out["err_after"], out
