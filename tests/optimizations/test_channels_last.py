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


def test_fits_only_image_batches_into_a_model_with_convolutions():
    from torch import nn

    from optimizations.base import parse_stack
    from study.models.facts import facts_of

    (toggle,) = parse_stack(["channels_last"])
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    assert toggle.fits(facts_of(cnn, torch.zeros(3, 2, 2))) == (True, "")
    ok, reason = toggle.fits(facts_of(mlp, torch.zeros(3, 2, 2)))
    assert not ok and "no 2-D convolution" in reason
    ok, reason = toggle.fits(facts_of(cnn, torch.zeros(64, dtype=torch.long)))
    assert not ok and "int64" in reason and "(N, C, H, W)" in reason


def test_a_stage_that_cannot_take_the_toggle_fails_with_the_reason(tiny_cfg, monkeypatch):
    # The search plans its runs without the preflight's facts: the stage process asks the toggle itself.
    import pytest

    from optimizations.base import DoesNotApply
    from study.stage import session
    from study.models.facts import ModelFacts

    monkeypatch.setattr(session, "facts_of", lambda model, x: ModelFacts(0, (3, 32, 32), "torch.float32"))
    with pytest.raises(DoesNotApply, match="channels_last.*convolution"):
        make_session(tiny_cfg, "channels_last")
