"""Plan: the loader and launch settings of one stage, written only by its toggles' configure().

These decide what a stage measures, so they are not user options: the baseline's plan is this class's
defaults (the loop a careful user writes today), and each toggle changes only its own fields. A
config file or flag that names one is refused with the toggle that sets it (see study.core.config).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Plan:
    num_workers: int = 0
    """DataLoader worker processes."""
    persistent_workers: bool = False
    """Keep DataLoader workers alive across epochs."""
    prefetch_factor: int = 0
    """Batches prefetched per worker (0: DataLoader default)."""
    pin_memory: bool = False
    """Page-locked host batches and non-blocking host-to-device copies."""
    world_size: int = 1
    """Processes per node for distributed launch (DDP) or hogwild."""
    launcher: str = "local"
    """local | torchrun | hogwild: how the stage process is started."""
    threads: int = 0
    """torch intra-op threads per process (0: the user's --threads); multi-process stages split the cores."""
    min_warmup: int = 0
    """Warm-up steps the stage needs at least (compile: the first compiles, the second checks nothing
    recompiles); the stage warms up max(--warmup, this)."""
    sweep: dict = field(default_factory=dict, compare=False, hash=False)
    """What workers=auto measured to choose num_workers (its table), carried to the stage's notes.
    Evidence of a decision, not a setting: left out of the plan's hash."""
    stage_batch_size: int = 0
    """Samples per step per process in this stage (0: the config's --batch-size). Not named batch_size:
    that is an option, and a config file may set options but never a plan field."""
    accumulate_steps: int = 1
    """Micro-batches whose gradients make one optimizer step (their losses each divided by this)."""
    batch_sweep: dict = field(default_factory=dict, compare=False, hash=False)
    """What batch=auto measured to choose stage_batch_size (its table): evidence, left out of the hash."""

    def per_process_batch(self, configured: int) -> int:
        """The per-process batch this stage trains with, given the config's."""
        return self.stage_batch_size or configured

    def replace(self, **changes: Any) -> "Plan":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        settings = {k: v for k, v in self.to_dict().items()
                    if k not in EVIDENCE and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Plan":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


PLAN_FIELDS = tuple(f.name for f in fields(Plan))
EVIDENCE = ("sweep", "batch_sweep")
# Fields added after runs were recorded, with their defaults: left out of the hash while at them, so
# a stage planned before they existed keeps its hash and --resume still finds it.
LATER_FIELDS = {"stage_batch_size": 0, "accumulate_steps": 1}
