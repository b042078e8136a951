"""workers: DataLoader worker processes, kept alive across epochs, each prefetching batches.

With num_workers=0 the training process decodes and augments every batch itself, between steps;
workers do it in parallel with the step. `workers=auto` measures instead of guessing: a data-only
pass over the training loader for each candidate count (0, 1, 2, 4, ... up to the CPU count) and the
smallest count within KNEE_TOLERANCE of the best throughput wins (the knee: more workers past it
cost memory and CPU that the training step needs).

The sweep runs at plan time (configure), once per study, in a stage process of its own, the way every
auto sweep runs (study.core.sweeps): every stage that has the toggle gets the same count, so stages
stay comparable; its table travels in the stage plan to the stage's notes (results.jsonl alone carries
it) and is kept in reports/<run>/worker_sweep.json for --resume. The sweep is data-only: it does not see the CPU that the
training step itself takes, which on a small machine favours fewer workers than it reports.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import torch

from optimizations.base import Env, Optimization, Plan, TrainContext, parse_int, register
from study.core.config import RunConfig
from study.core.sweeps import Sweep, load_or_sweep

PREFETCH_FACTOR = 2
KNEE_TOLERANCE = 0.10
SWEEP_BATCHES = 16  # timed batches per candidate, after the start-up batches
SWEEP_MAX_SECONDS = 5.0  # per candidate: heavy images at large batches stop early
SWEEP_FILE = "worker_sweep.json"


def workers_plan(plan: Plan, n: int, prefetch_factor: int = PREFETCH_FACTOR) -> Plan:
    """Loader settings for n persistent, prefetching workers (n = 0: the in-process loader)."""
    if n == 0:
        return plan.replace(num_workers=0, persistent_workers=False, prefetch_factor=0)
    return plan.replace(num_workers=n, persistent_workers=True, prefetch_factor=prefetch_factor)


def candidate_counts(cpu_count: int) -> list[int]:
    counts, n = [0], 1
    while n < cpu_count:
        counts.append(n)
        n *= 2
    return counts + [max(cpu_count, 1)] if cpu_count not in counts else counts


def measure_loader(cfg: RunConfig, dataset: Any, workers: int, batches: int = SWEEP_BATCHES,
                   max_seconds: float = SWEEP_MAX_SECONDS) -> dict[str, float]:
    """Samples/s of iterating the training loader alone with `workers` workers, in steady state.

    The batches the workers prefetch while starting up would flatter them, so the first
    workers × prefetch_factor + 1 batches are not timed; epochs are chained (persistent workers) when
    the (sub)set is short.
    """
    from torch.utils.data import DataLoader

    kwargs: dict[str, Any] = dict(batch_size=cfg.batch_size, shuffle=True, drop_last=True, num_workers=workers,
                                  generator=torch.Generator().manual_seed(cfg.seed))
    if workers:
        kwargs.update(prefetch_factor=PREFETCH_FACTOR, persistent_workers=True)
    if hasattr(dataset, "for_loader"):  # a sharded stream orders itself: no shuffle, its own spans per worker
        del kwargs["shuffle"]
        dataset = dataset.for_loader(0, 1, cfg.batch_size, drop_last=True)
    loader = DataLoader(dataset, **kwargs)
    if len(loader) == 0:
        return {"workers": workers, "samples_per_s": 0.0, "samples": 0, "seconds": 0.0, "startup_seconds": 0.0}

    def batches_forever():
        while True:
            yield from loader

    stream = batches_forever()
    t_start = time.perf_counter()
    for _ in range(workers * PREFETCH_FACTOR + 1):
        next(stream)
    startup = time.perf_counter() - t_start
    samples, t0 = 0, time.perf_counter()
    for _ in range(batches):
        samples += int(next(stream)[1].shape[0])
        if time.perf_counter() - t0 > max_seconds:
            break
    seconds = time.perf_counter() - t0
    stream.close()
    del stream, loader  # shut the workers down before the next candidate starts its own
    return {"workers": workers, "samples_per_s": samples / seconds if seconds > 0 else 0.0,
            "samples": samples, "seconds": seconds, "startup_seconds": startup}


def pick_knee(table: list[dict[str, float]], tolerance: float = KNEE_TOLERANCE) -> int:
    """Smallest worker count within `tolerance` of the best samples/s."""
    best = max(r["samples_per_s"] for r in table)
    return int(min(r["workers"] for r in table if r["samples_per_s"] >= (1 - tolerance) * best))


def sweep_key(cfg: RunConfig) -> str:
    """What the sweep's result depends on: the data section, the task, the batch and the seed; not the
    toggles or the run name."""
    import dataclasses
    import hashlib

    from study.core.config import DataOptions

    keys = [f.name for f in dataclasses.fields(DataOptions)] + ["task", "batch_size", "seed"]
    d = {k: getattr(cfg, k) for k in keys} | {"cpu_count": os.cpu_count()}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def sweep_workers(cfg: RunConfig, counts: list[int] | None = None, batches: int = SWEEP_BATCHES) -> dict[str, Any]:
    """Measure every candidate count; returns {"table": [...], "chosen": n, ...}."""
    from study.data import open_datasets

    bundle = open_datasets(cfg)
    counts = counts if counts is not None else candidate_counts(os.cpu_count() or 1)
    table = [measure_loader(cfg, bundle.train, n, batches) for n in counts]
    return {"key": sweep_key(cfg), "tolerance": KNEE_TOLERANCE, "batches_per_count": batches,
            "batch_size": cfg.batch_size, "table": table, "chosen": pick_knee(table)}


SWEEP = Sweep(name="workers", what="data-loader", file=SWEEP_FILE, instead="workers=2")


def sweep_job(cfg: RunConfig) -> dict[str, Any]:
    """What the sweep's stage process measures (study.stage.sweeps): the study's data settings."""
    return {"key": sweep_key(cfg), "config": json.loads(cfg.to_json())}


@register
class Workers(Optimization):
    name = "workers"
    description = "DataLoader worker processes (persistent, prefetching); auto sweeps counts and takes the knee"
    value_help = "N|auto"
    prior = 40
    addresses = {"data-bound": "worker processes load the next batches while the step runs"}
    plans = ("num_workers", "persistent_workers", "prefetch_factor")

    @classmethod
    def search_values(cls, env: Env) -> list[str | None]:
        return [str(n) for n in (1, 2, 4, 8) if n <= max(env.cpu_count, 1)][-3:]

    def parse_value(self, value: str | None) -> int | str:
        # workers=0 is the baseline itself, so a count starts at 1
        return parse_int("workers", value, minimum=1, default="auto", extra=("auto",))

    def __init__(self, value: str | None = None) -> None:
        super().__init__(value)
        self.sweep: dict[str, Any] | None = None

    def configure(self, plan: Plan, cfg: RunConfig, env: Env) -> Plan:
        if self.value != "auto":
            return workers_plan(plan, int(self.value))
        if self.sweep is None:  # plan() configures every later stage too; measure once
            self.sweep = load_or_sweep(SWEEP, sweep_job(cfg), cfg.report_dir, cfg.resume)
        return workers_plan(plan, int(self.sweep["chosen"])).replace(sweep=self.sweep)

    def setup(self, ctx: TrainContext) -> None:
        cfg, plan = ctx.cfg, ctx.plan
        note = (f"{plan.num_workers} workers, persistent, prefetch_factor {plan.prefetch_factor}" if plan.num_workers
                else "0 workers: loading in the training process measured fastest")
        if self.value == "auto":
            note = f"auto → {note}"
            sweep = plan.sweep
            if sweep:
                ctx.notes["worker_sweep"] = [{"workers": r["workers"], "samples_per_s": round(r["samples_per_s"], 1)}
                                             for r in sweep["table"]]
                ctx.notes["worker_sweep_chosen"] = sweep["chosen"]
        ctx.notes["workers"] = note
