"""TensorBoard scalars while a stage is timed, written by the parent from the progress file.

The stage process already writes its progress (steps done, the last loss and samples/s) at most once
a second, after a step's timer stopped; the parent reads it when it wakes (every 2 s) and adds the
points to the stage's TensorBoard folder under `live/`. So the curve moves while a long stage runs,
and the timed process does no more than it did: no writer thread, no event file in the loop. The
stage's own scalars (`train/`, `val/`) are still written after its timing pass, complete.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any


class LiveScalars:
    """One stage's live curve; opened on its first point, closed by close()."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.writer: Any = None
        self.last_step = -1

    def add(self, done: int, loss: float, samples_per_s: float) -> None:
        if done <= self.last_step:  # the parent saw this step already
            return
        self.last_step = done
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.log_dir.mkdir(parents=True, exist_ok=True)
            # flush with every wake-up of the parent: TensorBoard shows the point within seconds
            self.writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=2)
        if math.isfinite(loss):
            self.writer.add_scalar("live/train_loss", loss, done)
        if math.isfinite(samples_per_s):
            self.writer.add_scalar("live/samples_per_s", samples_per_s, done)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
