import pytest
import torch

from optimizations.base import parse_stack
from optimizations.pin import pin_plan
from study.plan import Plan
from study.config import RunConfig
from tests.optimizations.helpers import cpu_env, cuda_env, make_session


def test_not_applicable_without_an_accelerator():
    ok, reason = parse_stack("pin")[0].applicable(cpu_env())
    assert not ok and "no accelerator" in reason
    assert parse_stack("pin")[0].applicable(cuda_env())[0]


def test_configure_turns_pinning_on():
    assert pin_plan(Plan()).pin_memory is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs a CUDA device")
def test_batches_are_pinned_and_copied_non_blocking(tiny_cfg):
    sess = make_session(tiny_cfg.replace(device="cuda"), "pin")
    assert sess.train_loader.pin_memory
    x, y = next(iter(sess.train_loader))
    assert x.is_pinned()
    xd, _ = sess.state.to_device((x, y))
    assert xd.is_cuda
