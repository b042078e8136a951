"""The one loop and the one epoch driver on in-memory data: step times match an outside clock, each phase
holds its own time, warm-up is excluded, every stop policy ends where it says, checkpoints resume the count."""
import time

import pytest

import torch
from torch.utils.data import DataLoader, TensorDataset

from optimizations.base import Env, TrainContext
from study.train import loop
from study.core.config import RunConfig
from study.train import checkpoints
from study.train.checkpoints import load_checkpoint, save_checkpoint
from study.train.fit import StopPolicy, fit
from study.train.loop import PHASES, TrainState, train_epoch
from study.models.builtins import TinyNet
from study.train.tasks import build_task


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


def test_warmup_steps_are_flagged_and_every_phase_is_recorded():
    s = _state()
    recs = train_epoch(s, _loader(), max_steps=5, warmup=2)
    assert len(recs) == 5 and s.step == 5
    assert [r.measured for r in recs] == [False, False, True, True, True]
    for r in recs:
        assert set(r.phases) == set(PHASES)
        assert all(v >= 0 for v in r.phases.values())


def test_recorded_step_time_covers_the_wall_clock(monkeypatch):
    """The recorded step time against a clock the loop does not own: perf_counter around each whole
    call of train_step, and around the whole epoch. A phase left out of the step (or time counted
    twice) breaks one of the bounds."""
    walls = []
    inner = loop.train_step

    def timed_step(*args, **kwargs):
        t0 = time.perf_counter()
        out = inner(*args, **kwargs)
        walls.append(time.perf_counter() - t0)
        return out

    monkeypatch.setattr(loop, "train_step", timed_step)
    s = _state()
    t0 = time.perf_counter()
    recs = train_epoch(s, _loader(), max_steps=6, warmup=0)
    epoch_wall = time.perf_counter() - t0
    assert len(walls) == len(recs) == 6
    for r, wall in zip(recs, walls):
        assert 0 < r.seconds <= wall + 1e-9  # a step cannot last longer than the call that ran it
    recorded = sum(r.seconds for r in recs)
    # Against the calls that ran the steps, not the epoch: what the loop does between steps (records,
    # iter(loader)) is untimed on purpose, and a busy machine can stall the loop there at will.
    assert 0.9 * sum(walls) <= recorded <= epoch_wall


class _Delayed:
    """Sleeps a known time inside one phase of the step, so each phase has a floor the timer must see."""

    DATA, H2D, FORWARD, BACKWARD, OPTIMIZER = 0.04, 0.01, 0.03, 0.05, 0.02  # distinct: a swap shows

    @staticmethod
    def loader(batches):
        for batch in batches:
            time.sleep(_Delayed.DATA)  # blocked in next(loader): the data phase
            yield batch


class _SlowModel(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        time.sleep(_Delayed.FORWARD)
        out = self.inner(x)
        # a gradient hook on the output runs inside loss.backward(): the backward phase
        out.register_hook(lambda grad: (time.sleep(_Delayed.BACKWARD), grad)[1])
        return out


def test_each_phase_holds_the_time_spent_in_it():
    s = _state()
    s.model = _SlowModel(s.base_model)
    to_device, step = s.to_device, s.optimizer.step

    def slow_to_device(batch):
        time.sleep(_Delayed.H2D)
        return to_device(batch)

    def slow_step(*args, **kwargs):
        time.sleep(_Delayed.OPTIMIZER)
        return step(*args, **kwargs)

    s.to_device, s.optimizer.step = slow_to_device, slow_step
    batches = list(_loader(32))
    t0 = time.perf_counter()
    recs = train_epoch(s, _Delayed.loader(batches), max_steps=3, warmup=0)
    wall = time.perf_counter() - t0
    assert len(recs) == 3
    floors = {"data": _Delayed.DATA, "h2d": _Delayed.H2D, "forward": _Delayed.FORWARD,
              "backward": _Delayed.BACKWARD, "optimizer": _Delayed.OPTIMIZER}
    for r in recs:
        for phase, floor in floors.items():
            assert r.phases[phase] >= floor, (phase, r.phases)
    # counting one interval in two phases would show as recorded time beyond the wall clock
    assert sum(r.seconds for r in recs) <= wall


def test_fit_learns_and_validates():
    s = _state()
    res = fit(s, _loader(128), _loader(64), StopPolicy(epochs=3), warmup=1)
    assert res.metrics["top1"] > 0.5  # chance is 0.25
    assert [e.split for e in res.epochs] == ["train", "val"] * 3
    assert res.stopped == "epochs" and s.epoch == 3 and s.step == 3 * 16


def test_steps_run_across_epochs_without_validation():
    """The profiling passes' policy: n steps from here, the loader restarted as often as it runs out."""
    s = _state()
    res = fit(s, _loader(32), None, StopPolicy(steps=10))  # 4 batches an epoch
    assert len(res.steps) == 10 and res.stopped == "step cap" and s.epoch == 2 and s.steps_in_epoch == 2
    assert [e.split for e in res.epochs] == ["train"] * 3 and res.validations == 0
    assert all(r.measured for r in res.steps)  # no warm-up asked: every step counts


def test_a_time_cap_a_caller_condition_and_an_empty_loader_each_end_it():
    s = _state()
    assert fit(s, _loader(), None, StopPolicy(epochs=5, seconds=1e-9)).stopped == "time cap"
    assert s.epoch == 0 and s.steps_in_epoch == 1  # stopped after the first step, mid-epoch, position kept
    s = _state()
    res = fit(s, _loader(), None, StopPolicy(steps=50, done=lambda r: len(r.steps) == 3))
    assert res.stopped == "done" and len(res.steps) == 3
    assert fit(_state(), [], None, StopPolicy(steps=5)).stopped == "no batches"  # never an endless loop


def test_a_target_stops_at_the_first_validation_that_reaches_it():
    from study.core.target import Target

    s = _state()
    res = fit(s, _loader(128), _loader(64), StopPolicy(target=Target("top1", 0.9), validate_every=4, steps=200))
    assert res.reached and res.stopped == "reached" and res.steps_to_target % 4 == 0
    assert res.metrics["top1"] >= 0.9 and res.seconds_to_target > 0 and len(res.steps) == res.steps_to_target
    assert res.validations == res.steps_to_target // 4  # every 4 steps, none after each epoch
    assert s.model.training  # validation between steps hands the model back in train mode


def test_checkpoint_resume_continues_step_count(tmp_path):
    s = _state()
    fit(s, _loader(), _loader(16), StopPolicy(epochs=1, steps_per_epoch=3, val_steps=1))
    save_checkpoint(tmp_path / "c.pt", s)
    assert s.step == 3
    fresh = _state()
    load_checkpoint(tmp_path / "c.pt", fresh)
    assert fresh.step == 3 and fresh.epoch == 1
    for a, b in zip(fresh.base_model.state_dict().values(), s.base_model.state_dict().values()):
        assert torch.equal(a, b)
    fit(fresh, _loader(), _loader(16), StopPolicy(epochs=2, steps_per_epoch=3, val_steps=1))
    assert fresh.step == 6 and fresh.epoch == 2


def test_a_resume_mid_epoch_trains_only_the_steps_the_epoch_had_left(tmp_path):
    s = _state()
    fit(s, _loader(), None, StopPolicy(steps=5))  # 8 batches an epoch: stopped at step 5 of epoch 0
    save_checkpoint(tmp_path / "c.pt", s)
    fresh = _state()
    assert load_checkpoint(tmp_path / "c.pt", fresh) and fresh.steps_in_epoch == 5
    res = fit(fresh, _loader(), _loader(16), StopPolicy(epochs=1))
    assert len(res.steps) == 3 and fresh.step == 8 and fresh.epoch == 1 and res.validations == 1


def test_checkpoint_write_is_atomic(tmp_path):
    s = _state()
    save_checkpoint(tmp_path / "c.pt", s)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_a_finished_stage_keeps_its_weights_without_optimizer_state(tmp_path):
    """keep_weights_only drops the momentum (as large as the weights) and keeps what predict reads; such
    a file is no resume point: load_checkpoint says so and leaves the state as it is."""
    s = _state()
    fit(s, _loader(), None, StopPolicy(epochs=1, steps_per_epoch=3))
    save_checkpoint(tmp_path / "c.pt", s)
    full = (tmp_path / "c.pt").stat().st_size
    checkpoints.keep_weights_only(tmp_path / "c.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert set(state) == set(checkpoints.WEIGHTS_KEYS) and state["step"] == 3
    assert (tmp_path / "c.pt").stat().st_size < 0.7 * full
    for a, b in zip(state["model"].values(), s.base_model.state_dict().values()):
        assert torch.equal(a, b)
    fresh = _state()
    before = {k: v.clone() for k, v in fresh.base_model.state_dict().items()}
    assert load_checkpoint(tmp_path / "c.pt", fresh) is False
    assert fresh.step == 0 and all(torch.equal(v, before[k]) for k, v in fresh.base_model.state_dict().items())


class _Clock:
    """A clock the test moves by hand: the host's perf_counter and the fake device's events read it."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


def test_on_cuda_each_micro_batchs_data_phase_is_its_own_host_wait(monkeypatch):
    """The CUDA branch of the phase timer, with a fake event class standing in for the device: two
    micro-batches (gradient accumulation), each waiting 10 ms for its batch. The data phase is the two
    waits, not the first micro-batch's copy, forward and backward counted again as data."""
    clock = _Clock()

    class FakeEvent:
        def __init__(self, enable_timing: bool = False) -> None:
            self.at = None

        def record(self) -> None:
            self.at = clock.now

        def synchronize(self) -> None:
            pass

        def elapsed_time(self, later: "FakeEvent") -> float:
            return (later.at - self.at) * 1000.0

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(loop, "time", clock)
    timer = loop.PhaseTimer(torch.device("cuda"))
    timer.begin()
    for _ in range(2):
        for phase, seconds in (("data", 0.010), ("h2d", 0.001), ("forward", 0.020), ("backward", 0.030)):
            clock.now += seconds
            timer.mark(phase)
    clock.now += 0.005
    timer.mark("optimizer")
    total = timer.end()
    expected = {"data": 0.020, "h2d": 0.002, "forward": 0.040, "backward": 0.060, "optimizer": 0.005}
    assert timer.phases == pytest.approx(expected)
    assert total == pytest.approx(sum(expected.values()))


def test_under_ddp_accumulated_micro_batches_all_reduce_once_a_step(tmp_path):
    """batch=N:accumulate under DDP: every micro-batch but the last runs under no_sync, so a step of
    three micro-batches all-reduces its gradients once, counted by a communication hook on gloo."""
    import torch.distributed as dist

    from optimizations.ddp import Ddp

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        s = _state()
        s.model = Ddp("2").wrap_model(s.base_model, s.ctx)
        calls = []

        def counting(state, bucket):
            calls.append(bucket.index())
            done = torch.futures.Future()
            done.set_result(bucket.buffer())
            return done

        s.model.register_comm_hook(None, counting)
        s.ctx.micro_batches = 3
        batches = iter(_loader(48))
        for _ in range(2):
            assert loop.train_step(s, batches, loop.PhaseTimer(torch.device("cpu"))) is not None
        assert len(calls) == 2  # one bucket (a tiny model), once per step; without no_sync: 6
    finally:
        dist.destroy_process_group()
