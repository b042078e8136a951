import math

import torch

from tests.optimizations.helpers import losses_on_one_batch, make_session

CL = torch.channels_last


def test_weights_and_inputs_are_nhwc(tiny_cfg):
    sess = make_session(tiny_cfg, "channels_last")
    assert sess.ctx.memory_format is CL
    conv = sess.state.base_model.backbone[0].weight
    assert conv.is_contiguous(memory_format=CL) and not conv.is_contiguous()
    x, _ = sess.state.to_device(next(iter(sess.train_loader)))
    assert x.is_contiguous(memory_format=CL) and not x.is_contiguous()
    losses = losses_on_one_batch(sess, 6)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.9 * losses[0], losses  # NHWC weights and inputs still train


def test_baseline_stays_nchw(tiny_cfg):
    sess = make_session(tiny_cfg)
    assert sess.ctx.memory_format is None
    x, _ = sess.state.to_device(next(iter(sess.train_loader)))
    assert x.is_contiguous()
