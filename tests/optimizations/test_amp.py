import math

import pytest
import torch

from optimizations.amp import apply_amp, default_dtype
from optimizations.base import TrainContext, parse_stack
from study.core.config import RunConfig
from tests.optimizations.helpers import cpu_env, cuda_env, losses_on_one_batch, make_session


def _ctx(device="cpu"):
    return TrainContext(cfg=RunConfig(), env=cpu_env(), device=torch.device(device))


def test_bf16_autocast_is_active_inside_the_context_on_cpu():
    ctx = _ctx()
    apply_amp(ctx, "bf16")
    assert not torch.is_autocast_enabled("cpu")
    with ctx.autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        y = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
    assert y.dtype == torch.bfloat16
    assert not ctx.scaler.is_enabled()  # bf16 needs no loss scaling
    assert ctx.notes["amp"].startswith("bf16")


@pytest.mark.parametrize("native", [True, False])
def test_cpu_without_native_bf16_is_told_to_expect_a_slowdown(native):
    from dataclasses import replace

    ctx = TrainContext(cfg=RunConfig(), env=replace(cpu_env(), bf16_native=native), device=torch.device("cpu"))
    apply_amp(ctx, "bf16")
    assert ctx.notes["amp_bf16_native"] is native
    assert ("emulated" in ctx.notes["amp"]) is (not native)


def test_default_dtype_and_applicability():
    assert default_dtype(cpu_env()) == "bf16"
    assert default_dtype(cuda_env(bf16=True)) == "bf16" and default_dtype(cuda_env(bf16=False)) == "fp16"
    ok, reason = parse_stack("amp=fp16")[0].applicable(cpu_env())
    assert not ok and "fp16" in reason
    ok, reason = parse_stack("amp=bf16")[0].applicable(cuda_env(bf16=False))
    assert not ok and "bf16" in reason
    assert parse_stack("amp")[0].applicable(cpu_env())[0]


def test_session_step_runs_in_bf16(tiny_cfg):
    sess = make_session(tiny_cfg, "amp")
    x, y = sess.state.to_device(next(iter(sess.train_loader)))
    with sess.ctx.autocast():
        out = sess.state.model(x)
    assert out.dtype == torch.bfloat16
    losses = losses_on_one_batch(sess, 6)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.9 * losses[0], losses  # bf16 gradients still train the model
    assert next(sess.state.base_model.parameters()).dtype == torch.float32  # master weights stay fp32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 + GradScaler needs a CUDA device")
def test_fp16_on_cuda_uses_a_grad_scaler():
    ctx = TrainContext(cfg=RunConfig(), env=cuda_env(), device=torch.device("cuda"))
    apply_amp(ctx, "fp16")
    assert ctx.scaler.is_enabled()
    with ctx.autocast():
        assert torch.is_autocast_enabled("cuda")
