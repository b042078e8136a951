"""The one training/validation loop and its phase timer: one step (`train_step`), one pass over a
loader (`train_epoch`), validation. Epoch after epoch, and when to stop, is study.train.fit's.

Every stage, every profiling pass and every toggle goes through `train_step`; toggles act through the
context (autocast, scaler, memory format, non-blocking copies) and the wrapped model, never through
an `if` in here.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from study.train.context import TrainContext
from study.train.tasks import Task, logits_of

PHASES = ("data", "h2d", "forward", "backward", "optimizer")


class PhaseTimer:
    """Splits a step into phases.

    CPU: `perf_counter` at each boundary (work is synchronous). CUDA: the data phase is host time
    (the host blocks in `next(loader)`); the device phases are measured with CUDA events recorded at
    the boundaries, and the step ends with one synchronize so the events can be read — never
    `time.time()` around asynchronous work.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.phases: dict[str, float] = {}

    def begin(self) -> None:
        self.phases = {}
        self.wall0 = time.time()
        self.t0 = self.last = time.perf_counter()
        if self.cuda:
            self.events: list[tuple[str, torch.cuda.Event]] = []

    def mark(self, phase: str) -> None:
        if self.cuda and phase != "data":
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.events.append((phase, ev))
            # the next micro-batch's data phase is host time from here, not from this step's first batch
            self.last = time.perf_counter()
            return
        now = time.perf_counter()
        # added, not set: a step of several micro-batches (gradient accumulation) passes each phase again
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self.last
        self.last = now
        if self.cuda:  # the device phases are measured from here
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.events.append(("start", ev))

    def end(self) -> float:
        """Finish the step; returns its total seconds (sum of phases)."""
        if self.cuda and self.events:
            self.events[-1][1].synchronize()
            for (_, a), (name, b) in zip(self.events, self.events[1:]):
                if name != "start":  # from one micro-batch's backward to the next one's data: host time
                    self.phases[name] = self.phases.get(name, 0.0) + a.elapsed_time(b) / 1000.0
        else:
            self.phases.setdefault("data", 0.0)
        return sum(self.phases.values())


@dataclass
class StepRecord:
    step: int  # global step index, continues across resume
    epoch: int
    start: float  # wall-clock time the step began
    seconds: float
    phases: dict[str, float]
    samples: int
    loss: float
    measured: bool  # False for warm-up steps


@dataclass
class EpochRecord:
    epoch: int
    split: str  # "train" or "val"
    start: float
    seconds: float
    data_wait: float
    metrics: dict[str, float]
    loss: float


@dataclass
class TrainState:
    ctx: TrainContext
    model: Any  # wrapped (script/compile/DDP)
    base_model: torch.nn.Module  # unwrapped, for checkpoints
    task: Task
    optimizer: torch.optim.Optimizer
    step: int = 0
    epoch: int = 0
    steps_in_epoch: int = 0  # steps of `epoch` already done (resume mid-epoch)
    first_step: int = 0  # the global step this process started at (a resumed one: its checkpoint's)
    # What a checkpoint needs to be used on its own (study.train.checkpoint_meta.checkpoint_meta): model, task,
    # classes, input size, normalisation. Saved with every checkpoint, never read back by training.
    meta: dict = field(default_factory=dict)

    @property
    def scaler(self) -> Any:
        return self.ctx.scaler

    def to_device(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        non_blocking = self.ctx.plan.pin_memory
        x = x.to(self.ctx.device, non_blocking=non_blocking)
        if self.ctx.memory_format is not None:
            x = x.contiguous(memory_format=self.ctx.memory_format)
        return x, y.to(self.ctx.device, non_blocking=non_blocking)


def train_step(s: TrainState, batches: Iterator, timer: PhaseTimer) -> tuple[torch.Tensor, int] | None:
    """One optimizer step, phase by phase: one batch, or ctx.micro_batches of them whose gradients add
    up (gradient accumulation); the loss returned is the last one's. None when the loader is exhausted."""
    timer.begin()
    targets = []
    last = s.ctx.micro_batches - 1
    for i in range(s.ctx.micro_batches):
        batch = next(batches, None)
        if batch is None:
            return None
        timer.mark("data")
        x, y = s.to_device(batch)
        timer.mark("h2d")
        with s.ctx.accumulating() if i < last else contextlib.nullcontext():
            with s.ctx.autocast():
                output = s.model(x)
                loss = s.task.loss(output, y)
            timer.mark("forward")
            s.scaler.scale(s.ctx.micro_loss(loss)).backward()
            timer.mark("backward")
        targets.append(y)
    s.scaler.step(s.optimizer)
    s.scaler.update()
    # The default (set_to_none=True since torch 2.0), as the canonical loop writes it: zeroing in
    # place would make backward accumulate into old buffers and handicap the baseline.
    s.optimizer.zero_grad()
    timer.mark("optimizer")
    # what the task counts (images, or tokens for a language model), after the step's timer stopped
    return loss, sum(s.task.samples(t) for t in targets)


StepHook = Callable[[StepRecord], None]


def train_epoch(s: TrainState, loader: Any, *, max_steps: int, warmup: int,
                hooks: list[StepHook] = ()) -> list[StepRecord]:
    """Train one epoch (at most `max_steps` steps, 0 = all); this process's first `warmup` steps are not
    measured."""
    s.model.train()
    timer = PhaseTimer(s.ctx.device)
    batches = iter(loader)
    records: list[StepRecord] = []
    limit = max_steps or math.inf
    try:  # an epoch resumed mid-way has only the batches it had left, not a fresh loader's worth
        limit = min(limit, len(loader) // s.ctx.micro_batches)
    except TypeError:  # a loader without a length runs until it is exhausted
        pass
    while s.steps_in_epoch < limit:
        out = train_step(s, batches, timer)
        if out is None:
            break
        loss, n = out
        seconds = timer.end()
        rec = StepRecord(step=s.step, epoch=s.epoch, start=timer.wall0, seconds=seconds,
                         phases=dict(timer.phases), samples=n, loss=float(loss.detach()),
                         measured=s.step - s.first_step >= warmup)  # a resumed process warms up too
        records.append(rec)
        s.step += 1
        s.steps_in_epoch += 1
        for hook in hooks:
            hook(rec)
    return records


@torch.no_grad()
def validate(s: TrainState, loader: Any, *, max_steps: int = 0) -> tuple[dict[str, float], float, float]:
    """Returns (metrics, mean loss, data-wait seconds); metrics are all-reduced across ranks."""
    s.model.eval()
    metric = s.task.metric()
    total_loss, batches, wait = 0.0, 0, 0.0
    it = iter(loader)
    while not max_steps or batches < max_steps:
        t0 = time.perf_counter()
        batch = next(it, None)
        wait += time.perf_counter() - t0
        if batch is None:
            break
        x, y = s.to_device(batch)
        with s.ctx.autocast():
            output = s.model(x)
            loss = s.task.loss(output, y)
        metric.update(logits_of(output), y)
        total_loss += float(loss)
        batches += 1
    if s.ctx.world_size > 1 and torch.distributed.is_initialized():
        state = metric.state().to(s.ctx.device if s.ctx.device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(state)
        metric.load_state(state.cpu())
    return metric.compute(), total_loss / max(batches, 1), wait
