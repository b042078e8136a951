"""The auto sweeps' measuring side, in a stage process of its own (`python -m study.stage --sweep NAME`),
started at plan time by study.core.sweeps for the toggle that asks.

workers=auto: the data-only loader sweep of optimizations/workers.py over the study's data.
batch=auto: a session of the stage's toggles under the batch toggle; the candidate sizes are tried
smallest first against the memory budget, and the sizes that fit are timed side by side (the rules
are the toggle's, see its docstring). It sits above the session it builds; the toggles name it only as
a command, so they stay below the session.
"""
from __future__ import annotations

import gc
import resource
import statistics
from pathlib import Path
from typing import Any, Callable

import torch

from optimizations.batch import (ROUNDS, STEPS_PER_ROUND, ROUND_MAX_SECONDS, WARMUP_STEPS, candidate_sizes,
                                 set_accumulation, smaller_sizes, within_stage)
from study.core.hostinfo import proc_field_mb
from study.train.fit import StopPolicy, fit


# --- memory ------------------------------------------------------------------------------------------

class HostMemory:
    """This process's resident memory, now and its peak since reset() (Linux: VmHWM, reset by "5" in
    clear_refs; elsewhere the process's peak, which ascending sizes keep honest)."""

    def reset(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass

    def current_mb(self) -> float:
        return proc_field_mb("/proc/self/status", "VmRSS")

    def peak_mb(self) -> float:
        return proc_field_mb("/proc/self/status", "VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class DeviceMemory:
    """A CUDA device's allocated memory; running out shows as an OutOfMemoryError, not a budget."""

    def __init__(self, device: Any) -> None:
        self.device = device

    def reset(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)

    def current_mb(self) -> float:
        return torch.cuda.memory_allocated(self.device) / 2**20

    def peak_mb(self) -> float:
        return torch.cuda.max_memory_allocated(self.device) / 2**20


class Size:
    """One candidate size in the sweep: its loader, endlessly, its timed steps and its row of the table."""

    def __init__(self, sess: Any, size: int, micro_batches: int, row: dict[str, Any]) -> None:
        from study.stage.session import build_loaders

        self.size, self.micro_batches, self.sess, self.row = size, micro_batches, sess, row
        sess.ctx.plan = sess.ctx.plan.replace(stage_batch_size=size, accumulate_steps=micro_batches)
        loader, _ = build_loaders(sess.cfg, sess.bundle, sess.ctx)
        self.stream = self._forever(loader)
        self.times: list[float] = []

    @staticmethod
    def _forever(loader: Any):
        while True:
            yield from loader

    def train(self, stop: StopPolicy) -> list[float]:
        """Train this size's steps through the one driver, on its endless stream; their seconds."""
        self.sess.ctx.plan = self.sess.ctx.plan.replace(stage_batch_size=self.size, accumulate_steps=self.micro_batches)
        set_accumulation(self.sess.ctx, self.micro_batches)
        return [r.seconds for r in fit(self.sess.state, self.stream, None, stop).steps]


def sweep_batch(job: dict[str, Any], memory: Any = None) -> dict[str, Any]:
    """Try and time the candidate sizes of `job` (see sweep_job); returns the table and the choice."""
    from study.stage.session import build_session
    from study.core.stage_spec import StageSpec

    spec = StageSpec.from_dict(job["spec"])
    sess = build_session(spec)
    cfg, accumulate, budget = sess.cfg, bool(job["accumulate"]), float(job["budget_mb"])
    memory = memory or (DeviceMemory(sess.ctx.device) if sess.ctx.device.type == "cuda" else HostMemory())
    sizes = within_stage(candidate_sizes(cfg.batch_size, accumulate), len(sess.bundle.train), cfg,
                         job["stage_world"], job["stage_warmup"])
    warmup = max(WARMUP_STEPS, spec.plan.min_warmup)
    start_mb = memory.current_mb()
    rows: list[dict[str, Any]] = []
    fitting: list[Size] = []

    def probe(size: int) -> bool:
        """Try `size` and add its row to the table; True when it fits (then it is kept for timing)."""
        row: dict[str, Any] = {"batch": size, "fits": False}
        rows.append(row)
        if fitting and budget:
            grown = start_mb + (fitting[-1].row["peak_mb"] - start_mb) * size / fitting[-1].size
            if grown > budget:
                row["reason"] = f"not tried: its peak would be about {grown:.0f} MB, over the budget of {budget:.0f} MB"
                return False
        cand = Size(sess, size, cfg.batch_size // size if accumulate else 1, row)
        memory.reset()
        try:
            cand.train(StopPolicy(steps=warmup))
        except RuntimeError as e:
            if not (isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()):
                raise
            row["reason"] = "out of memory"
        if row.get("reason"):  # out of the except block: its traceback no longer holds the step's tensors
            sess.state.optimizer.zero_grad()
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return False
        row["peak_mb"] = round(memory.peak_mb(), 1)
        if budget and row["peak_mb"] > budget:
            row["reason"] = f"peak {row['peak_mb']:.0f} MB over the budget of {budget:.0f} MB"
            return False
        row.update(fits=True, accumulate=cand.micro_batches)
        fitting.append(cand)
        return True

    # Smallest first; the first size that does not fit ends it (a larger one needs more memory still),
    # and when that was the smallest, its halves are tried until one fits.
    for size in sizes:
        if not probe(size):
            break
    if not fitting:
        for size in smaller_sizes(sizes[0], cfg.batch_size, accumulate):
            if probe(size):
                break
    for r in range(job.get("rounds", ROUNDS)):
        turn = r % max(len(fitting), 1)
        for cand in fitting[turn:] + fitting[:turn]:  # one step at least, then a large size stops early
            cand.times += cand.train(StopPolicy(steps=job.get("steps", STEPS_PER_ROUND), seconds=ROUND_MAX_SECONDS))
    for cand in fitting:
        step_s = statistics.median(cand.times)
        cand.row.update(steps=len(cand.times), step_s=step_s,
                        samples_per_s=cand.size * cand.micro_batches / step_s if step_s > 0 else 0.0)
    rows.sort(key=lambda r: r["batch"])
    timed = [r for r in rows if r.get("samples_per_s")]
    chosen = max(timed, key=lambda r: r["samples_per_s"])["batch"] if timed else 0
    return {"key": job["key"], "configured": cfg.batch_size, "accumulate": accumulate, "budget_mb": round(budget, 1),
            "device": str(sess.ctx.device), "rounds": job.get("rounds", ROUNDS), "table": rows, "chosen": chosen}


def sweep_workers_of(job: dict[str, Any]) -> dict[str, Any]:
    from optimizations.workers import sweep_workers
    from study.core.config import RunConfig

    return sweep_workers(RunConfig.from_dict(job["config"]))


SWEEPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"workers": sweep_workers_of, "batch": sweep_batch}
