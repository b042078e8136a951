"""--until METRIC=VALUE: the time each stage takes to reach a validation metric, not only its step time.

Step time alone credits changes that converge slower (hogwild's stale updates, a bigger batch, lower
precision). With a target, a stage's timing run trains until its validation metric reaches the value:
it validates every `--until-every` steps (after the step's timer stopped, so step times stay what they
are), stops at the first validation that reaches the target, or when `--until-minutes` of training
have passed or `--steps` were trained. The time to target is wall time from the first training step to
the end of that validation: warm-up, compile and every validation on the way included, because the
user waits for all of them.

Higher is better for a metric unless its name says a loss (perplexity, loss): there the target is
reached at or below the value.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from study.core.target import Target

class Stop(Exception):
    """Raised by the check between steps: the target was reached, or the cap hit."""


@dataclass
class Outcome:
    reached: bool = False
    seconds: float = -1.0  # first step to the validation that reached the target
    steps: int = -1  # training steps it took
    validations: int = 0
    stopped: str = ""  # why training ended: "reached", "time cap", "step cap"


def fit_until(s: Any, train_loader: Any, val_loader: Any, target: Target, *, every: int, cap_s: float,
              max_steps: int, val_steps: int, warmup: int, hooks: list = ()) -> tuple[Any, Outcome]:
    """Train `s` epoch after epoch, validating every `every` steps, until `target` is reached or a cap
    is hit. Returns (LoopResult, Outcome); the loop itself is the ladder's (study.train.loop.train_epoch)."""
    import torch

    from study.train.loop import EpochRecord, LoopResult, train_epoch, validate

    result, outcome = LoopResult(), Outcome()
    first_step = s.step
    t0 = time.perf_counter()

    def agree(flag: bool) -> bool:
        """Every DDP rank stops at the same step, or the others would wait in a collective."""
        if s.ctx.world_size > 1 and torch.distributed.is_initialized():
            t = torch.tensor([1.0 if flag else 0.0], device=s.ctx.device if s.ctx.device.type == "cuda" else "cpu")
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            return bool(t.item())
        return flag

    def check(rec: Any) -> None:
        result.steps.append(rec)
        trained = s.step - first_step
        if trained % every and not (max_steps and trained >= max_steps):
            return
        w1, t1 = time.time(), time.perf_counter()
        metrics, val_loss, wait = validate(s, val_loader, max_steps=val_steps)
        s.model.train()  # validate() left it in eval mode; the epoch goes on
        result.epochs.append(EpochRecord(epoch=s.epoch, split="val", start=w1, seconds=time.perf_counter() - t1,
                                         data_wait=wait, metrics=metrics, loss=val_loss))
        result.metrics = metrics
        outcome.validations += 1
        elapsed = time.perf_counter() - t0
        if target.reached(metrics):  # validate() all-reduced the metrics: every rank agrees already
            outcome.reached, outcome.seconds, outcome.steps, outcome.stopped = True, elapsed, trained, "reached"
            raise Stop
        if agree(elapsed > cap_s):
            outcome.stopped = "time cap"
            raise Stop
        if max_steps and trained >= max_steps:
            outcome.stopped = "step cap"
            raise Stop

    while True:
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(s.epoch)
        try:
            if not train_epoch(s, train_loader, max_steps=0, warmup=warmup, hooks=[*hooks, check]):
                outcome.stopped = outcome.stopped or "no batches"
                break
        except Stop:
            break
        s.epoch += 1
        s.steps_in_epoch = 0
    return result, outcome
