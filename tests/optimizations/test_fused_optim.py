import torch

from optimizations.fused_optim import fused_optimizer_kwargs, fused_supported
from tests.optimizations.helpers import make_session


def test_fused_step_where_supported_else_foreach():
    kwargs = fused_optimizer_kwargs("cpu")
    assert kwargs == ({"fused": True} if fused_supported("cpu") else {"foreach": True})


def test_optimizer_is_fused_and_grads_are_dropped(tiny_cfg):
    sess = make_session(tiny_cfg, "fused_optim")
    opt = sess.state.optimizer
    assert opt.defaults.get("fused") or opt.defaults.get("foreach")
    assert sess.ctx.set_to_none and "set_to_none=True" in sess.notes["fused_optim"]
    sess.run_steps(1)
    assert all(p.grad is None for p in sess.state.base_model.parameters())


def test_baseline_zeroes_gradients_in_place(tiny_cfg):
    sess = make_session(tiny_cfg)
    opt = sess.state.optimizer
    assert not opt.defaults.get("fused") and not opt.defaults.get("foreach")
    assert sess.ctx.set_to_none is False
    sess.run_steps(1)
    grads = [p.grad for p in sess.state.base_model.parameters()]
    assert all(g is not None and not g.any() for g in grads)


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
