"""The search's budget: wall time spent (runs reused on --resume count), what a run will cost, and what
is kept for after the search (the final check and the chosen stack's ladder)."""
from __future__ import annotations

import time
from typing import Callable

from optimizations.base import first_run_cost
from study.core.config import RunConfig

DEFAULT_RUN_S = 30.0  # a child run's wall time before any was measured
PICTURES_S = 20.0
PROFILE_PASS_SHARE = 0.5  # a profiling pass (a few steps) against a timing run, both with process start-up


class Budget:
    """`--budget-minutes` against `clock` (injectable: the budget logic is tested without waiting)."""

    def __init__(self, cfg: RunConfig, device_type: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg, self.device_type, self.clock = cfg, device_type, clock
        self.passes = cfg.repeats
        self.budget_s = cfg.budget_minutes * 60.0
        self.started = clock()
        self.reused_s = 0.0  # wall time of an interrupted study's runs that --resume reuses
        self.costs: dict[tuple[str, ...], list[float]] = {}  # each stack's runs' wall seconds, in order

    def elapsed(self) -> float:
        return self.clock() - self.started + self.reused_s

    def run_cost(self, stack: tuple[str, ...], first: bool) -> float:
        """Estimated wall seconds of one child run of `stack`: its latest run (a compile's first run
        filled the on-disk cache, later ones hit it), else its incumbent's plus what the last toggle
        is known to add (a cold compile on its first run)."""
        if self.costs.get(stack):
            return self.costs[stack][-1]
        known = self.costs.get(stack[:-1]) if stack else None
        base = known[-1] if known else (self.costs[()][-1] if self.costs.get(()) else DEFAULT_RUN_S)
        # what the toggle itself says its run adds before it was measured (a cold compile, say)
        return base + (first_run_cost(stack[-1], self.device_type, first) if stack else 0.0)

    def reserve(self, stack: tuple[str, ...], more: int = 1) -> float:
        """Seconds kept for after the search: the final check (the baseline beside the best stack) and
        the ladder, with its profiling passes and pictures, of `stack` plus `more` toggles (a round
        plans for the one it may keep)."""
        inc, base = self.run_cost(stack, first=False), self.run_cost((), first=False)
        ladder = (len(stack) + 1 + more) * (self.passes + PROFILE_PASS_SHARE * len(self.cfg.profile)) * inc
        return (self.passes * (base + inc) if stack or more else 0.0) + ladder + (0.0 if self.cfg.no_pictures else PICTURES_S)

    def seconds_left(self, stack: tuple[str, ...]) -> float:
        return self.budget_s - self.elapsed() - self.reserve(stack)
