import torch

from optimizations.fused_optim import fused_optimizer_kwargs
from tests.optimizations.helpers import make_session

# torch 2.4 added fused SGD kernels for the CPU (release notes: fused Adam/AdamW/SGD on CPU).
CPU_SGD_FUSES = torch.__version__ >= "2.4"


def test_fused_step_where_supported_else_foreach():
    assert fused_optimizer_kwargs("cpu") == ({"fused": True} if CPU_SGD_FUSES else {"foreach": True})
    assert fused_optimizer_kwargs("meta") == {"foreach": True}  # no fused kernel for meta tensors


def test_optimizer_is_fused_and_grads_are_dropped(tiny_cfg):
    sess = make_session(tiny_cfg, "fused_optim")
    opt = sess.state.optimizer
    assert (opt.defaults["fused"], opt.defaults["foreach"]) == ((True, None) if CPU_SGD_FUSES else (None, True))
    sess.run_steps(1)
    assert all(p.grad is None for p in sess.state.base_model.parameters())


def test_baseline_uses_the_plain_optimizer_and_torchs_zero_grad(tiny_cfg):
    sess = make_session(tiny_cfg)
    opt = sess.state.optimizer
    assert opt.defaults["fused"] is None and opt.defaults["foreach"] is None  # torch picks per step
    sess.run_steps(1)
    # zero_grad()'s default since torch 2.0 drops the gradients, as a careful user's loop does
    assert all(p.grad is None for p in sess.state.base_model.parameters())


def test_fused_and_plain_sgd_agree():
    torch.manual_seed(0)
    a = torch.nn.Linear(8, 4)
    b = torch.nn.Linear(8, 4)
    b.load_state_dict(a.state_dict())
    oa = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    ob = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, **fused_optimizer_kwargs("cpu"))
    x = torch.randn(16, 8)
    for _ in range(3):
        for m, o in ((a, oa), (b, ob)):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
    assert torch.allclose(a.weight, b.weight, atol=1e-6)
