"""batch: the stage's batch size per process, fixed (`batch=N`; `batch=xK`: K times --batch-size, what
the search tries, as it measures its candidates itself) or measured (`batch=auto`).

A larger batch spreads what a step costs whatever its size (launches, Python, the optimizer's update,
DDP's all-reduce) over more samples, until memory runs out. `batch=auto` measures at plan time
(configure), once per study, in a stage process of its own as every auto sweep (study.core.sweeps): the config's batch ×½, ×1, ×2, ×4, ×8
(no more than the stage can still measure steps of), smallest first. A size that does not fit is
dropped and no larger one tried: on CUDA an out-of-memory error; on the CPU a peak resident memory
above BUDGET_SHARE of the memory available at plan time (split between a multi-process stage's
processes), and a size whose peak, extrapolated from the last that fit, would pass it is not started.
When even the smallest does not fit, halves are tried down to 1. The sizes that fit are then timed
side by side, ROUNDS rounds of a few steps of each (the order turned each round, so a slow spell of
the machine falls on all), and the most samples/s by median step wins. The table travels in the
plan to the stage's notes and to reports/<run>/batch_sweep.json for --resume, as workers=auto's does.

The sweep trains the toggles under this one in the ladder, in one process: DDP and hogwild are left
out (their processes each take the batch, per process), and on a CPU one process's share of the
cores and of the memory budget is what is measured.

A larger batch also changes the optimisation (the learning rate was set for the config's batch), so
a short run's metric is not comparable. `batch=N:accumulate` keeps the config's effective batch: N
divides --batch-size and each step adds the gradients of --batch-size/N batches of N, each loss divided
by their count, so only memory and speed change (BatchNorm still sees batches of N).
`batch=auto:accumulate` sweeps the divisors of --batch-size down to an eighth: the fastest split that
fits. With ddp, only the last micro-batch of a step all-reduces (the others run under no_sync).
"""
from __future__ import annotations

import functools
from typing import Any

from optimizations.base import Env, Optimization, Plan, TrainContext, load_all, parse_int, register, toggle_name
from study.core.config import ConfigError, RunConfig
from study.core.sweeps import Sweep, load_or_sweep
from study.train.context import same_loss
from study.core.hostinfo import proc_field_mb

GROW_FACTORS = (2, 4, 8)  # the config's batch times these, beside its half and itself
MAX_ACCUMULATE = 8  # batch=auto:accumulate tries micro-batches down to --batch-size / this
WARMUP_STEPS = 2  # untimed steps of each size before its memory is read (the optimizer's state, allocator)
ROUNDS = 3
STEPS_PER_ROUND = 3
ROUND_MAX_SECONDS = 5.0  # per size and round: a large batch of a heavy model stops early (one step at least)
MIN_STAGE_STEPS = 3  # a size must leave the stage this many measured steps (or as many as the config's batch)
BUDGET_SHARE = 0.5  # of the memory available at plan time, for the CPU sweep's peak
SWEEP_FILE = "batch_sweep.json"
ACCUMULATE = "accumulate"


# --- what a value means ------------------------------------------------------------------------------

def share_of(micro_batches: int, loss: Any) -> Any:
    return loss / micro_batches


def set_accumulation(ctx: TrainContext, micro_batches: int) -> None:
    """Make each step of `ctx` add the gradients of `micro_batches` batches (1: a plain step)."""
    ctx.micro_batches = micro_batches
    ctx.micro_loss = same_loss if micro_batches == 1 else functools.partial(share_of, micro_batches)


def micro_batches_of(configured: int, size: int) -> int:
    """How many batches of `size` make the config's batch; refused when they cannot."""
    if size > configured or configured % size:
        raise ConfigError(f"batch={size}:{ACCUMULATE} keeps the effective batch of --batch-size {configured}, so "
                          f"{size} must divide it; use a divisor of {configured}, or batch={size} without :{ACCUMULATE}")
    return configured // size


def candidate_sizes(configured: int, accumulate: bool) -> list[int]:
    """The sizes batch=auto tries, smallest first (before the stage's own cap)."""
    if accumulate:
        return sorted({configured >> k for k in range(MAX_ACCUMULATE.bit_length()) if configured % (1 << k) == 0})
    return sorted({max(configured // 2, 1), configured, *(configured * f for f in GROW_FACTORS)})


def smaller_sizes(smallest: int, configured: int, accumulate: bool) -> list[int]:
    """Halves below the smallest candidate, tried in turn when even it did not fit."""
    out, size = [], smallest
    while size > 1 and not (accumulate and configured % (size // 2)):
        size //= 2
        out.append(size)
    return out


def stage_steps_measured(size: int, train_samples: int, cfg: RunConfig, world: int, warmup: int) -> int:
    """Steps the stage times at this batch: the loader drops the last partial batch of each rank."""
    per_epoch = train_samples // max(world, 1) // size
    return min(cfg.steps or per_epoch, per_epoch) * cfg.epochs - warmup


def within_stage(sizes: list[int], train_samples: int, cfg: RunConfig, world: int, warmup: int) -> list[int]:
    """The sizes that leave the stage as many measured steps as the config's batch does, up to
    MIN_STAGE_STEPS: a batch so large that the stage times one step would measure nothing."""
    need = max(1, min(stage_steps_measured(cfg.batch_size, train_samples, cfg, world, warmup), MIN_STAGE_STEPS))
    return [s for s in sizes if s <= cfg.batch_size or stage_steps_measured(s, train_samples, cfg, world, warmup) >= need]


def sweep_job(plan: Plan, cfg: RunConfig, env: Env, accumulate: bool, own_spec: str) -> dict[str, Any]:
    """What the sweep child measures: the stage's toggles under this one, in one local process."""
    import hashlib

    from study.core.stage_spec import StageSpec

    registry = load_all()
    stack = tuple(cfg.stack[:cfg.stack.index(own_spec)] if own_spec in cfg.stack else cfg.stack)
    # DDP and hogwild start processes of their own: the sweep measures the batch of one of them
    stack = tuple(s for s in stack if "launcher" not in registry[toggle_name(s)].plans)
    sweep_cfg = cfg.replace(stack=stack)
    sweep_plan = plan.replace(launcher="local", world_size=1, sweep={}, batch_sweep={})
    available = proc_field_mb("/proc/meminfo", "MemAvailable")
    budget = 0.0 if env.device_type == "cuda" else BUDGET_SHARE * available / max(plan.world_size, 1)
    key = hashlib.sha256(f"{sweep_cfg.hash()}|{sweep_plan.hash()}|{accumulate}|{env.to_dict()}".encode()).hexdigest()[:12]
    spec = StageSpec(index=0, name="batch-sweep", stack=stack, config=sweep_cfg, plan=sweep_plan)
    return {"key": key, "spec": spec.to_dict(), "accumulate": accumulate, "budget_mb": budget,
            "stage_world": plan.world_size, "stage_warmup": max(cfg.warmup, plan.min_warmup)}


SWEEP = Sweep(name="batch", what="batch-size", file=SWEEP_FILE, instead="batch=64")


@register
class Batch(Optimization):
    name = "batch"
    description = ("the stage's batch size per process (N, or K times --batch-size); auto times the sizes that fit "
                   "and keeps the fastest per sample; :accumulate keeps the config's effective batch")
    value_help = "N|xK|auto[:accumulate]"
    prior = 75  # after the toggles that leave the training as it is: a larger batch changes the optimisation
    addresses = {
        "host-bound": "a larger batch spreads each step's launches and Python over more samples",
        "optimizer-heavy": "a larger batch spreads each step's parameter update over more samples",
        "communication-bound": "a larger batch per process spreads each all-reduce over more samples",
    }
    plans = ("stage_batch_size", "accumulate_steps", "batch_sweep")

    @classmethod
    def search_values(cls, env: Env) -> list[str | None]:
        # Multiples of the config's batch, not auto: the search measures candidates itself, and a sweep
        # at plan time for every incumbent would cost minutes its budget never sees.
        return ["x2", "x4"] if env.device_type == "cuda" else ["x2"]

    def parse_value(self, value: str | None) -> tuple[str, int, bool]:
        """(kind, number, accumulate): ("auto", 0, ...), ("size", N, ...) or ("times", K, False)."""
        size, colon, mode = (value or "auto").partition(":")
        if (colon and mode != ACCUMULATE) or (size.startswith("x") and not (size[1:].isdigit() and int(size[1:]) >= 2)):
            raise ConfigError(f"bad value for batch: {value!r}; expected N, xK (K times --batch-size, K of 2 or more), "
                              f"auto, N:{ACCUMULATE} or auto:{ACCUMULATE}")
        if size.startswith("x"):
            if colon:
                raise ConfigError(f"batch={value}: accumulation keeps --batch-size per step, so it cannot grow it; "
                                  f"use batch=N:{ACCUMULATE} with N a divisor of --batch-size, or batch={size}")
            return "times", int(size[1:]), False
        n = parse_int("batch", size, minimum=1, extra=("auto",))
        return ("auto", 0, bool(colon)) if n == "auto" else ("size", int(n), bool(colon))

    def __init__(self, value: str | None = None) -> None:
        super().__init__(value)
        self.sweep: dict[str, Any] | None = None

    def configure(self, plan: Plan, cfg: RunConfig, env: Env) -> Plan:
        kind, n, accumulate = self.value
        size = n * cfg.batch_size if kind == "times" else n
        if kind == "auto":
            if self.sweep is None:  # plan() configures every later stage too: they get the same size
                self.sweep = load_or_sweep(SWEEP, sweep_job(plan, cfg, env, accumulate, self.spec), cfg.report_dir,
                                           cfg.resume)
            if not self.sweep.get("chosen"):
                why = "; ".join(f"{r['batch']}: {r.get('reason', '')}" for r in self.sweep.get("table", []))
                raise ConfigError(f"batch=auto: no batch size fits here ({why}); lower --image-size or use a smaller model")
            size, plan = int(self.sweep["chosen"]), plan.replace(batch_sweep=self.sweep)
        micro = micro_batches_of(cfg.batch_size, size) if accumulate else 1
        return plan.replace(stage_batch_size=size, accumulate_steps=micro)

    def setup(self, ctx: TrainContext) -> None:
        plan, configured = ctx.plan, ctx.cfg.batch_size
        set_accumulation(ctx, plan.accumulate_steps)
        size = plan.per_process_batch(configured)
        note = f"{size} per process (--batch-size {configured})"
        if plan.accumulate_steps > 1:
            note = f"{size} x {plan.accumulate_steps} accumulated per step = {size * plan.accumulate_steps} (--batch-size)"
        sweep = plan.batch_sweep
        if self.value[0] == "auto" and sweep:
            note = f"auto → {note}"
            ctx.notes["batch_sweep"] = [{"batch": r["batch"], "accumulate": r["accumulate"],
                                         "samples_per_s": round(r.get("samples_per_s", 0.0), 1),
                                         "peak_mb": r.get("peak_mb", 0.0)} if r["fits"] else
                                        {"batch": r["batch"], "fits": False, "reason": r.get("reason", "")}
                                        for r in sweep["table"]]
            ctx.notes["batch_sweep_chosen"] = sweep["chosen"]
        ctx.notes["batch"] = note
