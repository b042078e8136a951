"""TrainContext: the per-process training state that toggles' hooks read and set before the loop.

A core type: the loop, the session and every toggle share it, so it lives here, below all of them.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

from study.core.config import RunConfig
from study.core.machine import Env
from study.core.stage_plan import Plan


def same_loss(loss: Any) -> Any:
    return loss


@dataclass
class TrainContext:
    cfg: RunConfig
    env: Env
    device: Any  # torch.device
    plan: Plan = field(default_factory=Plan)  # loader and launch settings the stage's toggles planned
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    autocast: Callable[[], ContextManager] = contextlib.nullcontext
    scaler: Any = None  # torch.amp.GradScaler; disabled one by default
    optimizer_kwargs: dict = field(default_factory=dict)
    memory_format: Any = None  # torch.memory_format for inputs, None keeps contiguous
    example: Callable[[], Any] | None = None  # two real input samples of the stage's data, batched, on the device
    notes: dict = field(default_factory=dict)  # what toggles want recorded (e.g. "script: traced")
    # Gradient accumulation (batch=N:accumulate): batches per optimizer step, and what backward takes
    # of each one's loss. One batch and its loss as it is by default, so the baseline's step has no
    # extra operation in it.
    micro_batches: int = 1
    micro_loss: Callable[[Any], Any] = same_loss
    # The context every micro-batch of a step but the last runs in: gradients add up locally there, and
    # the last one's backward synchronizes them once (DDP's no_sync). Nothing by default.
    accumulating: Callable[[], ContextManager] = contextlib.nullcontext
