import pytest
import torch

from optimizations.base import parse_stack
from study.core.config import RunConfig
from tests.optimizations.helpers import cpu_env, cuda_env, make_session


def test_not_applicable_without_an_accelerator():
    ok, reason = parse_stack("pin")[0].applicable(cpu_env())
    assert not ok and "no accelerator" in reason
    assert parse_stack("pin")[0].applicable(cuda_env())[0]


def test_pin_stage_is_planned_on_cuda_and_skipped_with_its_reason_on_cpu():
    """On CUDA the pin stage's plan pins and the stages after it keep pinning; on the CPU the stage is
    planned as skipped, saying why, and no stage's plan pins (pinning there buys nothing)."""
    from study.runner.ladder import plan

    cfg = RunConfig(model="tiny")
    on_cuda = plan(cfg, parse_stack("pin,amp"), cuda_env())
    assert [(s.skip_reason, s.spec.plan.pin_memory) for s in on_cuda] == [("", False), ("", True), ("", True)]
    on_cpu = plan(cfg, parse_stack("pin,amp"), cpu_env())
    assert [s.spec.plan.pin_memory for s in on_cpu] == [False, False, False]
    assert "accelerator" in on_cpu[1].skip_reason and not on_cpu[2].skip_reason
    assert on_cpu[2].spec.stack == ("amp",)  # the skipped toggle is left out of the later stages


class CopySpy:
    """Stands in for a batch tensor: records how the loop asks for its copy to the device."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, dict]] = []

    def to(self, device, **kwargs):
        self.calls.append((device, kwargs))
        return self


@pytest.mark.parametrize("stack, pinned", [("pin", True), ((), False)], ids=["pin", "baseline"])
def test_the_copy_to_the_device_is_non_blocking_exactly_when_the_plan_pins(tiny_cfg, stack, pinned):
    sess = make_session(tiny_cfg, stack)
    assert sess.ctx.plan.pin_memory is pinned
    x, y = CopySpy(), CopySpy()
    sess.state.to_device((x, y))
    assert x.calls == [(sess.ctx.device, {"non_blocking": pinned})] and y.calls == x.calls


@pytest.mark.parametrize("stack, pinned", [("pin", True), ((), False)], ids=["pin", "baseline"])
def test_the_loaders_pin_on_an_accelerator_when_the_plan_says_so(tiny_cfg, stack, pinned):
    """The loaders are built as they would be for a CUDA device (built, not iterated: no device here);
    on the CPU itself nothing is pinned, since no copy follows."""
    from types import SimpleNamespace

    from study.stage.session import build_loaders

    sess = make_session(tiny_cfg, stack)
    on_cuda = SimpleNamespace(**{**vars(sess.ctx), "device": torch.device("cuda")})
    assert [loader.pin_memory for loader in build_loaders(sess.cfg, sess.bundle, on_cuda)] == [pinned, pinned]
    assert not sess.train_loader.pin_memory and not sess.val_loader.pin_memory  # this session is on the CPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs a CUDA device")
def test_batches_are_pinned_and_reach_the_device(tiny_cfg):
    sess = make_session(tiny_cfg.replace(device="cuda"), "pin")
    assert sess.train_loader.pin_memory
    x, y = next(iter(sess.train_loader))
    assert x.is_pinned() and y.is_pinned()
    xd, yd = sess.state.to_device((x, y))
    torch.cuda.synchronize()
    assert xd.is_cuda and yd.is_cuda and torch.equal(xd.cpu(), x) and torch.equal(yd.cpu(), y)
