"""The one epoch driver: `fit` trains epoch after epoch through the one loop (study.train.loop) until
its stop policy says to stop.

Every way the study trains goes through here, each with its own policy:
- the timing pass: `--epochs` epochs of at most `--steps` steps, validating after each epoch;
- `--until METRIC=VALUE`: validating every N steps, until the metric reaches the target, or a time or
  step cap is hit;
- the profiling passes: exactly n more steps, across epochs if the loader runs out, no validation;
- the sanity check: one fixed batch, step after step, until the pipeline has learned it or a cap;
- batch=auto's sweep: a few timed steps of each size, within a time cap.

Time to target (`--until`) is wall time from the first training step to the end of the validation that
reached the target: warm-up, compile and every validation on the way included, because the user waits
for all of them. Validations run after a step's timer stopped, so step times stay what they are.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from study.core.target import Target
from study.train.loop import EpochRecord, StepHook, StepRecord, TrainState, train_epoch, validate


@dataclass
class LoopResult:
    steps: list[StepRecord] = field(default_factory=list)
    epochs: list[EpochRecord] = field(default_factory=list)  # train and val records, in order
    metrics: dict[str, float] = field(default_factory=dict)  # of the last validation
    stopped: str = ""  # why training ended: "epochs", "step cap", "time cap", "reached", "done", "no batches"
    validations: int = 0
    reached: bool = False  # the target, with a target
    seconds_to_target: float = -1.0  # first step to the end of the validation that reached it
    steps_to_target: int = -1


@dataclass(frozen=True, kw_only=True)
class StopPolicy:
    """When `fit` stops, and when it validates. Every limit is off at 0 (or None); the first one met ends it."""

    epochs: int = 0
    """Train until the state's epoch reaches this (a resumed state trains only the epochs it has left)."""
    steps_per_epoch: int = 0
    """At most this many steps an epoch (`--steps`); 0: the whole loader."""
    steps: int = 0
    """Steps in all from the start of this call, across epochs."""
    seconds: float = 0.0
    """Training time from the start of this call. With `validate_every`, checked at each validation (every
    rank stops at the same step); else after every step."""
    target: Target | None = None
    """Stop at the first validation whose metrics reach it."""
    validate_every: int = 0
    """Validate every N steps (and at the step cap); 0: after each epoch, when there is a validation loader."""
    val_steps: int = 0
    """Batches per validation; 0: the whole validation loader."""
    done: Callable[[LoopResult], bool] | None = None
    """The caller's own end, asked after every step (the sanity check: the batch is learned)."""


class Stop(Exception):
    """Raised between steps by the policy's check: training ends here, mid-epoch if need be."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def agree(s: TrainState, flag: bool) -> bool:
    """Every DDP rank stops at the same step, or the others would wait in a collective."""
    if s.ctx.world_size > 1 and torch.distributed.is_initialized():
        t = torch.tensor([1.0 if flag else 0.0], device=s.ctx.device if s.ctx.device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())
    return flag


def fit(s: TrainState, train_loader: Any, val_loader: Any, stop: StopPolicy, *, warmup: int = 0,
        hooks: list[StepHook] = ()) -> LoopResult:
    """Train `s` epoch after epoch until `stop` says so; resumes from `s.epoch`/`s.steps_in_epoch`.
    `val_loader` None: no validation. This process's first `warmup` steps are not measured. `hooks` run
    after every step, outside its timer."""
    result = LoopResult()
    first_step, t0 = s.step, time.perf_counter()

    def run_validation() -> dict[str, float]:
        w, t = time.time(), time.perf_counter()
        metrics, loss, wait = validate(s, val_loader, max_steps=stop.val_steps)
        result.epochs.append(EpochRecord(epoch=s.epoch, split="val", start=w, seconds=time.perf_counter() - t,
                                         data_wait=wait, metrics=metrics, loss=loss))
        result.metrics = metrics
        result.validations += 1
        return metrics

    def check(rec: StepRecord) -> None:
        result.steps.append(rec)
        trained = s.step - first_step
        at_cap = bool(stop.steps) and trained >= stop.steps
        if stop.validate_every and val_loader is not None:
            if trained % stop.validate_every and not at_cap:
                return
            metrics = run_validation()
            s.model.train()  # validate() left the model in eval mode; the epoch goes on
            if stop.target is not None and stop.target.reached(metrics):  # all-reduced: every rank agrees
                result.reached, result.steps_to_target = True, trained
                result.seconds_to_target = time.perf_counter() - t0
                raise Stop("reached")
        if stop.seconds and agree(s, time.perf_counter() - t0 > stop.seconds):
            raise Stop("time cap")
        if at_cap:
            raise Stop("step cap")
        if stop.done is not None and stop.done(result):
            raise Stop("done")

    while not (stop.epochs and s.epoch >= stop.epochs):
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(s.epoch)  # DistributedSampler: a new shuffle each epoch
        t, w, before, resumed_at = time.perf_counter(), time.time(), len(result.steps), s.steps_in_epoch
        try:
            train_epoch(s, train_loader, max_steps=stop.steps_per_epoch, warmup=warmup, hooks=[*hooks, check])
        except Stop as e:
            result.stopped = e.reason
        steps = result.steps[before:]
        if steps:
            result.epochs.append(EpochRecord(
                epoch=s.epoch, split="train", start=w, seconds=time.perf_counter() - t,
                data_wait=sum(r.phases.get("data", 0.0) for r in steps), metrics={},
                loss=sum(r.loss for r in steps) / len(steps)))
        if result.stopped:
            break  # mid-epoch: the position stays where it is, for a checkpoint to resume from
        if not steps and not resumed_at:
            result.stopped = "no batches"  # a loader that yields nothing would never end the loop
            break
        if not stop.validate_every and val_loader is not None:
            run_validation()
        s.epoch += 1
        s.steps_in_epoch = 0
    result.stopped = result.stopped or "epochs"
    return result
