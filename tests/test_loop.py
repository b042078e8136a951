"""The one loop on in-memory data: phases add up, warm-up is excluded, checkpoints resume the count."""
import torch
from torch.utils.data import DataLoader, TensorDataset

from optimizations.base import Env, TrainContext
from study.config import RunConfig
from study.loop import PHASES, TrainState, fit, load_checkpoint, save_checkpoint, train_epoch
from study.models import TinyNet
from study.tasks import build_task


def _state(cfg=None):
    cfg = cfg or RunConfig(model="tiny")
    ctx = TrainContext(cfg=cfg, env=Env.detect("cpu"), device=torch.device("cpu"))
    ctx.scaler = torch.amp.GradScaler("cpu", enabled=False)
    torch.manual_seed(0)
    model = TinyNet(4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return TrainState(ctx=ctx, model=model, base_model=model, task=build_task("classify", 4), optimizer=opt)


def _loader(n=64):
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 4, (n,), generator=g)
    # the class is written into the colour channels: learnable in a few steps
    x = torch.randn(n, 3, 16, 16, generator=g) * 0.1 + y.view(-1, 1, 1, 1).float()
    return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=g)


def test_phases_partition_the_step_and_warmup_is_flagged():
    s = _state()
    recs = train_epoch(s, _loader(), max_steps=5, warmup=2)
    assert len(recs) == 5 and s.step == 5
    assert [r.measured for r in recs] == [False, False, True, True, True]
    for r in recs:
        assert set(r.phases) == set(PHASES)
        assert all(v >= 0 for v in r.phases.values())
        assert abs(sum(r.phases.values()) - r.seconds) < 1e-9
        assert r.phases["forward"] > 0 and r.phases["backward"] > 0


def test_fit_learns_and_validates():
    s = _state()
    res = fit(s, _loader(128), _loader(64), epochs=3, max_steps=0, val_steps=0, warmup=1)
    assert res.metrics["top1"] > 0.5  # chance is 0.25
    assert [e.split for e in res.epochs] == ["train", "val"] * 3


def test_checkpoint_resume_continues_step_count(tmp_path):
    s = _state()
    fit(s, _loader(), _loader(16), epochs=1, max_steps=3, val_steps=1, warmup=0,
        checkpoint=tmp_path / "c.pt", checkpoint_every=2)
    assert s.step == 3
    fresh = _state()
    load_checkpoint(tmp_path / "c.pt", fresh)
    assert fresh.step == 3 and fresh.epoch == 1
    for a, b in zip(fresh.base_model.state_dict().values(), s.base_model.state_dict().values()):
        assert torch.equal(a, b)
    fit(fresh, _loader(), _loader(16), epochs=2, max_steps=3, val_steps=1, warmup=0)
    assert fresh.step == 6 and fresh.epoch == 2


def test_checkpoint_write_is_atomic(tmp_path):
    s = _state()
    save_checkpoint(tmp_path / "c.pt", s)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
