"""The timing pass: train with every profiler off, then turn the steps into one StageResult.

How the stage trains is a strategy: in this process (plain, script, compile, DDP ranks, ...) by
default, or by a toggle that replaces it (hogwild spawns trainers on a shared model). Everything
around it (resume, progress, seed records, scalars, checkpoint check, the result row, MFU) is the
same for every stage, here once.
"""
from __future__ import annotations

import math
import os
import platform
import resource
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from study.train.checkpoints import keep_weights_only, load_checkpoint, save_checkpoint
from study.train.fit import LoopResult, StopPolicy, fit
from study.train.loop import PHASES, StepHook, StepRecord
from study.core.records import (TYPE_BATCH, TYPE_TRAIN, TYPE_VAL, StageResult, load_seed_rows,
                           seed_rows_to_csv, versions, write_atomic)
from study.stage.session import Session
from study.core.stats import median_ci, percentile, steadiness
from study.core.target import parse_target
from study.core.stage_spec import PROGRESS_ENV, write_progress

PROGRESS_EVERY_S = 1.0


@dataclass(frozen=True)
class TrainerKit:
    """What a toggle's own trainer (hogwild) needs from the layers above the toggles: handed to it,
    not imported by it, so the toggles stay below the session that builds them. Module-level
    functions only: a spawned trainer process receives the kit pickled, by name."""

    build_session: Callable[[Any], Session]
    build_loaders: Callable[..., tuple[Any, Any]]
    seed_everything: Callable[[int], None]
    progress_hooks: Callable[[Session], list]
    rank_summary: Callable[..., dict[str, Any]]


# (session, kit) -> (loop result, one summary per training process, see rank_summary)
Trainer = Callable[[Session, TrainerKit], tuple[LoopResult, list[dict[str, Any]]]]


def peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    # ru_maxrss is KiB on Linux: the high-water mark of this process's resident memory
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "host_max_rss"


def memory_capacity(device: torch.device) -> float:
    """MB the peak can grow to: the GPU's total memory, or the host's RAM (shared by its processes)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 2**20
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (ValueError, OSError, AttributeError):
        return 0.0


# A measured step more than this much slower than the next one means the stage was still warming
# up (TorchScript's profiling executor, compile's recompiles, allocator and cache warm-up take several
# steps): it joins the warm-up, and so on while the steps still fall, within EXTRA_WARMUP_MAX steps
# and never more than half of the measured ones.
STILL_FALLING = 1 / 0.9
EXTRA_WARMUP_MAX = 10


def extend_warmup(steps: list[StepRecord]) -> int:
    """Move the leading measured steps that were still speeding up into the warm-up (their
    `measured` flag); returns how many moved."""
    measured = [r for r in steps if r.measured]
    limit = min(EXTRA_WARMUP_MAX, len(measured) // 2)
    moved = 0
    while moved < limit and measured[moved].seconds > STILL_FALLING * measured[moved + 1].seconds:
        measured[moved].measured = False
        moved += 1
    return moved


def rank_summary(steps: list[StepRecord], device: torch.device) -> dict[str, Any]:
    """One process's share of a timing pass, in the form result_row combines across processes."""
    extended = extend_warmup(steps)
    measured = [r for r in steps if r.measured]
    return {
        "warmup_extended": extended,
        "samples": sum(r.samples for r in measured),
        "seconds": sum(r.seconds for r in measured),
        "step_times": [r.seconds for r in measured],
        "phases": {p: sum(r.phases.get(p, 0.0) for r in measured) for p in PHASES},
        "warmup_seconds": sum(r.seconds for r in steps if not r.measured),
        "memory": peak_memory(device),
    }


def gather(obj: Any, world: int) -> list[Any]:
    if world > 1 and torch.distributed.is_initialized():
        out: list[Any] = [None] * world
        torch.distributed.all_gather_object(out, obj)
        return out
    return [obj]


def progress_hooks(sess: Session) -> list[StepHook]:
    """Report "done total" to the parent after each step (after the step's timer stopped: untimed)."""
    path = os.environ.get(PROGRESS_ENV)
    if not path or sess.ctx.rank != 0:
        return []
    cfg = sess.cfg
    per_epoch = len(sess.train_loader) // sess.ctx.micro_batches  # a step of accumulated batches takes several
    total = min(cfg.steps or per_epoch, per_epoch) * cfg.epochs
    last = [0.0]

    def report(rec: StepRecord) -> None:
        # at most one small file write a second: the parent polls every 2 s anyway
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or rec.step + 1 >= total:
            last[0] = now
            write_progress(path, rec.step + 1, total, rec.loss,
                           rec.samples * sess.ctx.world_size / rec.seconds if rec.seconds > 0 else math.nan)
    return [report]


def stop_policy(sess: Session) -> StopPolicy:
    """The stage's training: --epochs epochs of at most --steps steps, validated after each; or, with
    --until, until the validation metric (every --until-every steps) reaches the target or a cap."""
    cfg = sess.cfg
    target = parse_target(cfg.until)
    if target is None:
        return StopPolicy(epochs=cfg.epochs, steps_per_epoch=cfg.steps, val_steps=cfg.val_steps)
    every = cfg.until_every or max(len(sess.train_loader) // 4, 1)
    return StopPolicy(target=target, validate_every=every, seconds=cfg.until_minutes * 60, steps=cfg.steps,
                      val_steps=cfg.val_steps)


def train_in_process(sess: Session, kit: TrainerKit) -> tuple[LoopResult, list[dict[str, Any]]]:
    """The default trainer: the one loop in this process (one rank of DDP, or the only process)."""
    cfg, ctx, s = sess.cfg, sess.ctx, sess.state
    stop = stop_policy(sess)
    hooks = progress_hooks(sess)
    if cfg.checkpoint_every and ctx.rank == 0:
        def periodic(rec: StepRecord) -> None:
            if s.step % cfg.checkpoint_every == 0:
                save_checkpoint(sess.checkpoint_path, s)
        hooks.append(periodic)
    result = fit(s, sess.train_loader, sess.val_loader, stop, warmup=sess.warmup, hooks=hooks)
    if ctx.rank == 0:
        save_checkpoint(sess.checkpoint_path, s)
    if stop.target is not None:
        sess.notes["until"] = {"target": str(stop.target), "every": stop.validate_every, "reached": result.reached,
                               "seconds": result.seconds_to_target, "steps": result.steps_to_target,
                               "validations": result.validations, "stopped": result.stopped}
    return result, gather(rank_summary(result.steps, ctx.device), ctx.world_size)


def kit() -> TrainerKit:
    from study.stage.session import build_loaders, build_session, seed_everything

    return TrainerKit(build_session=build_session, build_loaders=build_loaders, seed_everything=seed_everything,
                      progress_hooks=progress_hooks, rank_summary=rank_summary)


def trainer_of(sess: Session) -> Trainer:
    """The trainer a toggle of this stage brings (hogwild), else training in this process."""
    for t in sess.toggles:
        if t.stage_trainer is not None:
            return t.stage_trainer
    return train_in_process


def timing_pass(sess: Session, repeat: int) -> StageResult:
    """Train with every profiler off; warm-up steps excluded from every figure."""
    cfg, ctx, s = sess.cfg, sess.ctx, sess.state
    sess.profile_dir.mkdir(parents=True, exist_ok=True)
    sess.report_dir.mkdir(parents=True, exist_ok=True)
    # Only the first repeat resumes: a later one would find the end of the repeat before it.
    if cfg.resume and repeat == 0 and sess.checkpoint_path.exists() and load_checkpoint(sess.checkpoint_path, s):
        sess.notes["resumed_from_step"] = s.step
    started = time.time()
    result, ranks = trainer_of(sess)(sess, kit())
    for t in sess.toggles:
        sess.notes.update(t.after_run(ctx))
    if ctx.rank == 0:
        if repeat == 0:
            write_scalars(sess, result)
        write_seed_records(sess, result, repeat)
        if repeat == cfg.repeats - 1 and not cfg.keep_checkpoints and sess.checkpoint_path.is_file():
            keep_weights_only(sess.checkpoint_path)  # the stage is trained: nothing resumes from it now
        if cfg.dry_run:
            sess.notes["checkpoint_verified"] = verify_checkpoint(sess)
    row = result_row(sess, repeat, ranks, result, started)
    if ctx.device.type == "cuda":  # others computing on this GPU, where NVML can tell
        from study.core.machine_load import foreign_gpu_processes

        row.notes = {**row.notes, "foreign_gpu_processes": foreign_gpu_processes(ctx.device.index or 0)}
    if ctx.rank == 0:
        from study.stage.flops import fill_mfu

        fill_mfu(row, sess)  # after the timed loop: counting FLOPs (on meta) never enters the timing
    return row


def result_row(sess: Session, repeat: int, ranks: list[dict], result: LoopResult, started: float) -> StageResult:
    cfg, ctx = sess.cfg, sess.ctx
    step_times = ranks[0]["step_times"]
    # All ranks run in lockstep (DDP all-reduce per step); the slowest rank sets the pace.
    n = len(step_times)
    phases = {p: ranks[0]["phases"][p] / n if n else 0.0 for p in PHASES}
    total = sum(phases.values())
    lo, hi = median_ci(step_times)
    p50 = percentile(step_times, 0.5)
    throughput = median_throughput(ranks)
    nodes = cfg.nnodes if sess.plan.launcher == "torchrun" else 1
    identity = sess.spec.identity() | dict(world_size=ctx.world_size, nodes=nodes)
    # a plug-in task that names no metric_name: the first value its metric computes
    metric_name = sess.state.task.metric_name or next(iter(result.metrics), "")
    # A pass that measured no step (a resumed stage whose checkpoint had finished its training) has
    # no speed to report: never an ok row with zeros in it.
    empty = "" if n else (f"measured no step: the stage was at step {sess.state.step} of its training when this pass "
                          f"started{' (resumed from its checkpoint)' if 'resumed_from_step' in sess.notes else ''}; "
                          f"rerun without --resume to train it afresh")
    steady, drift = steadiness(step_times)
    if ranks[0].get("warmup_extended"):  # steps that still sped up, left out of the timing
        sess.notes["warmup_extended"] = ranks[0]["warmup_extended"]
    if steady is not None:
        sess.notes["step_time_drift"] = round(drift, 4)  # second half's median step over the first's, minus 1
    until = sess.notes.get("until") or {}
    row = StageResult(
        **identity, kind="repeat", repeat=repeat, repeats=cfg.repeats,
        time_to_target_s=until.get("seconds", -1.0) if until.get("reached") else -1.0,
        steps_to_target=until.get("steps", -1) if until.get("reached") else -1,
        status="failed" if empty else "ok", error=empty,
        device=str(ctx.device), device_name=device_name(ctx.device), threads=torch.get_num_threads(),
        steps_measured=n,
        throughput=throughput,
        step_time_p50=p50, step_time_p90=percentile(step_times, 0.9),
        step_time_ci_low=lo, step_time_ci_high=hi, ci_basis="steps",
        step_time_cv=statistics.stdev(step_times) / statistics.fmean(step_times) if n >= 2 else 0.0,
        steady=steady,
        t_data=phases["data"], t_h2d=phases["h2d"], t_forward=phases["forward"],
        t_backward=phases["backward"], t_optimizer=phases["optimizer"],
        data_wait_share=phases["data"] / total if total else 0.0,
        setup_seconds=sess.setup_seconds, warmup_seconds=ranks[0]["warmup_seconds"],
        peak_memory_mb=max(r["memory"][0] for r in ranks), memory_kind=ranks[0]["memory"][1],
        memory_capacity_mb=memory_capacity(ctx.device),
        metric_name=metric_name, metric=result.metrics.get(metric_name, 0.0),
        metrics=result.metrics, final_loss=result.steps[-1].loss if result.steps else 0.0,
        first_loss=result.steps[0].loss if result.steps else 0.0,
        diverged_step=next((r.step for r in result.steps if not math.isfinite(r.loss)), -1),
        steps_total=sess.state.step, epochs=cfg.epochs, notes=sess.notes,
        versions=versions(), started=started, finished=time.time(),
    )
    if len(ranks) > 1:  # imbalance between processes: the slowest one sets the pace of all
        row.notes = {**row.notes, "rank_seconds": [round(r["seconds"], 4) for r in ranks]}
    # Throughput CI over the steps of this one run, from the median's interval (the aggregate over
    # repeats replaces it with a t-interval over repeats).
    row.throughput_ci_low = throughput * p50 / hi if hi > 0 else throughput
    row.throughput_ci_high = throughput * p50 / lo if lo > 0 else throughput
    return row


def median_throughput(ranks: list[dict]) -> float:
    """Samples/s of the stage, one rule for one process, DDP ranks and hogwild trainers alike: every
    process's measured samples over the measured time of the slowest, each process's time taken as its
    step count × its median step time.

    The median, not the summed step times: on a shared machine one step stalled by another tenant would
    otherwise move the figure, and comparisons between stages would follow the noise. DDP ranks step in
    lockstep (the same median); independent trainers (hogwild) are done when the slowest one is."""
    times = [len(r["step_times"]) * percentile(r["step_times"], 0.5) for r in ranks if r["step_times"]]
    slowest = max(times, default=0.0)
    return sum(r["samples"] for r in ranks) / slowest if slowest > 0 else 0.0


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from study.core.hostinfo import cpuinfo

    name = cpuinfo().get("model name") or platform.processor() or platform.machine()
    return f"{name} ({os.cpu_count()} cores)"


def write_scalars(sess: Session, result: LoopResult) -> None:
    """TensorBoard scalars of the timing pass, written after it so the writer never runs in the loop."""
    from torch.utils.tensorboard import SummaryWriter

    cfg, world = sess.cfg, sess.ctx.world_size
    seen: set[int] = set()  # hogwild trainers number their steps alike: one point per step index
    with SummaryWriter(log_dir=str(sess.profile_dir)) as writer:
        for rec in result.steps:
            if rec.step in seen or rec.step % cfg.log_every:
                continue
            seen.add(rec.step)
            writer.add_scalar("train/loss", rec.loss, rec.step)
            if rec.measured and rec.seconds > 0:
                writer.add_scalar("train/samples_per_s", rec.samples * world / rec.seconds, rec.step)
        for ep in result.epochs:
            writer.add_scalar(f"{ep.split}/loss", ep.loss, ep.epoch)
            for k, v in ep.metrics.items():
                writer.add_scalar(f"{ep.split}/{k}", v, ep.epoch)


def write_seed_records(sess: Session, result: LoopResult, repeat: int) -> None:
    """reports/<run>/stages/<stage>/records-r<repeat>.csv in the seed format."""
    rows: list[tuple] = load_seed_rows(sess.bundle.loads)
    for ep in result.epochs:
        t = TYPE_TRAIN if ep.split == "train" else TYPE_VAL
        if sess.cfg.task == "segment":
            v1, v2 = ep.metrics.get("miou", ""), ep.metrics.get("pixel_acc", "")
        elif sess.cfg.task == "classify":
            v1, v2 = ep.metrics.get("top1", ""), ep.metrics.get("top5", "")
        else:  # a plug-in task: its own metric, the one column it names
            v1, v2 = ep.metrics.get(sess.state.task.metric_name, ""), ""
        if ep.split == "train":
            v1, v2 = ep.loss, ""
        rows.append((t, ep.epoch, f"{ep.start:.6f}", f"{ep.data_wait:.6f}", f"{ep.seconds:.6f}", v1, v2))
    for r in result.steps:
        rows.append((TYPE_BATCH, r.epoch, f"{r.start:.6f}", f"{r.phases.get('data', 0.0):.6f}",
                     f"{r.seconds:.6f}", f"{r.loss:.6f}", r.samples))
    write_atomic(sess.report_dir / f"records-r{repeat}.csv", seed_rows_to_csv(rows))


def verify_checkpoint(sess: Session) -> bool:
    """Reload the saved checkpoint into a freshly built model; every tensor must match."""
    from study.models.builtins import build_model

    state = torch.load(sess.checkpoint_path, map_location="cpu", weights_only=True)
    fresh = build_model(sess.cfg, sess.bundle.num_classes)
    fresh.load_state_dict(state["model"])
    live = sess.state.base_model.state_dict()
    same = all(torch.equal(v.cpu(), live[k].detach().cpu()) for k, v in fresh.state_dict().items())
    return bool(same and state["step"] == sess.state.step)
