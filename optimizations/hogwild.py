"""hogwild: asynchronous data-parallel training of one shared-memory model by N CPU processes.

Hogwild! (Recht et al., 2011): the model's tensors live in shared memory; N processes each train on
their own shard of the data and write their SGD updates into the same tensors without locks. Updates
may overwrite each other; for sparse-ish gradients that costs little accuracy and removes every
synchronisation point that DDP has (no all-reduce, no lockstep).

Process model: the stage process builds the session as usual, moves the model into shared memory,
and spawns N trainers. Each trainer builds its own session from the same stage spec (same toggles,
loop, loaders), adopts the shared tensors in place of its freshly built ones, takes shard `rank` of
the training set (DistributedSampler's split, without a process group), and runs the one training
loop (`study.loop.train_epoch`) with its own optimizer (momentum buffers are per process, as in the
original algorithm). Trainers start together behind a barrier. The stage process then validates the
shared model once, saves the checkpoint and writes the stage row: throughput is all trainers' measured
samples over the longest trainer's measured time, the same rule as DDP. Per-epoch validation happens
only after the last epoch (the trainers do not stop for it). Profiling passes run one process: they
explain the step, which is the same loop.
"""
from __future__ import annotations

import dataclasses
import os
import queue as queue_mod
import time
import traceback
from typing import Any

import torch

from optimizations.base import Env, Optimization, parse_int, register
from study.config import RunConfig

DEFAULT_PROCESSES = 2
BARRIER_TIMEOUT_S = 900


def hogwild_config(cfg: RunConfig, processes: int) -> RunConfig:
    share = max(1, (os.cpu_count() or 1) // processes)
    threads = min(cfg.threads, share) if cfg.threads else share
    return cfg.replace(launcher="hogwild", world_size=processes, threads=threads)


def shared_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Move the model into shared memory (in place) and return its parameters and buffers by name."""
    model.share_memory()
    named = list(model.named_parameters()) + list(model.named_buffers())
    return {name: t.data for name, t in named}


def adopt_shared(model: torch.nn.Module, shared: dict[str, torch.Tensor]) -> None:
    """Point every parameter and buffer of `model` at the shared tensors. The Parameter objects stay
    the same, so an optimizer or a scripted/compiled wrapper built on them trains the shared model."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        src = shared[name]
        if src.shape != t.shape or src.dtype != t.dtype:
            raise RuntimeError(f"hogwild: shared tensor {name} is {tuple(src.shape)} {src.dtype}, "
                               f"the trainer's is {tuple(t.shape)} {t.dtype}")
        t.data = src


def _trainer(spec: Any, rank: int, processes: int, shared: dict[str, torch.Tensor], out: Any, barrier: Any) -> None:
    """One Hogwild trainer (a spawned process)."""
    try:
        from study.loop import EpochRecord, train_epoch
        from study.worker import build_loaders, build_session, rank_summary, seed_everything

        sess = build_session(spec)
        cfg, state = sess.cfg, sess.state
        adopt_shared(state.base_model, shared)
        seed_everything(cfg.seed + rank)  # own augmentation stream per trainer
        shard_ctx = dataclasses.replace(sess.ctx, rank=rank, world_size=processes)
        train_loader, _ = build_loaders(cfg, sess.bundle, shard_ctx)
        barrier.wait(timeout=BARRIER_TIMEOUT_S)
        steps, epochs = [], []
        for epoch in range(cfg.epochs):
            train_loader.sampler.set_epoch(epoch)
            state.epoch, state.steps_in_epoch = epoch, 0
            t0, w0 = time.perf_counter(), time.time()
            got = train_epoch(state, train_loader, max_steps=cfg.steps, warmup=cfg.warmup)
            steps += got
            epochs.append(EpochRecord(epoch=epoch, split="train", start=w0, seconds=time.perf_counter() - t0,
                                      data_wait=sum(r.phases.get("data", 0.0) for r in got), metrics={},
                                      loss=sum(r.loss for r in got) / max(len(got), 1)))
        out.put({"rank": rank, "pid": os.getpid(), "summary": rank_summary(steps, sess.ctx.device),
                 "steps": steps, "epochs": epochs})
    except BaseException as e:  # noqa: BLE001 — the stage process reports it
        barrier.abort()
        out.put({"rank": rank, "pid": os.getpid(), "error": f"{type(e).__name__}: {e}",
                 "traceback": traceback.format_exc()[-3000:]})
        raise SystemExit(1) from None


def run_trainers(spec: Any, model: torch.nn.Module, processes: int) -> list[dict[str, Any]]:
    """Spawn `processes` trainers on the shared `model`; returns their reports, rank order.

    spawn, not fork: the parent has already run OpenMP/MKL thread pools, which are not fork-safe.
    """
    import torch.multiprocessing as mp

    shared = shared_tensors(model)
    mpc = mp.get_context("spawn")
    out = mpc.Queue()
    barrier = mpc.Barrier(processes)
    procs = [mpc.Process(target=_trainer, args=(spec, i, processes, shared, out, barrier), name=f"hogwild-{i}")
             for i in range(processes)]
    for p in procs:
        p.start()
    reports: dict[int, dict[str, Any]] = {}
    error = ""
    try:
        while len(reports) < processes and not error:
            try:
                msg = out.get(timeout=1.0)
            except queue_mod.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead and out.empty():
                    error = f"trainer {dead[0].name} exited with code {dead[0].exitcode} and no report"
                continue
            if "error" in msg:
                error = f"trainer {msg['rank']} failed: {msg['error']}\n{msg['traceback']}"
            reports[msg["rank"]] = msg
    finally:
        for p in procs:
            p.join(timeout=None if not error else 10)
            if p.is_alive():
                p.terminate()
                p.join()
    if error:
        raise RuntimeError(error)
    return [reports[i] for i in range(processes)]


def hogwild_timing_pass(sess: Any, repeat: int) -> Any:
    """The timing pass of a Hogwild stage; returns the StageResult (same fields as any stage)."""
    from study.loop import EpochRecord, LoopResult, load_checkpoint, save_checkpoint, validate
    from study.worker import _result_row, _verify_checkpoint, _write_seed_records

    cfg, ctx, state = sess.cfg, sess.ctx, sess.state
    processes = cfg.world_size
    sess.profile_dir.mkdir(parents=True, exist_ok=True)
    sess.report_dir.mkdir(parents=True, exist_ok=True)
    if cfg.resume and sess.checkpoint_path.exists():
        load_checkpoint(sess.checkpoint_path, state)  # weights only matter: trainers keep own momentum
        sess.notes["resumed_from_step"] = state.step
    started = time.time()
    reports = run_trainers(sess.spec, state.base_model, processes)

    steps = sorted((r for rep in reports for r in rep["steps"]), key=lambda r: r.start)
    t1, w1 = time.perf_counter(), time.time()
    metrics, val_loss, wait = validate(state, sess.val_loader, max_steps=cfg.val_steps)
    val = EpochRecord(epoch=cfg.epochs - 1, split="val", start=w1, seconds=time.perf_counter() - t1,
                      data_wait=wait, metrics=metrics, loss=val_loss)
    result = LoopResult(steps=steps, epochs=list(reports[0]["epochs"]) + [val], metrics=metrics)
    state.step, state.epoch, state.steps_in_epoch = len(steps), cfg.epochs, 0
    ctx.world_size = processes
    sess.notes["hogwild"] = (f"{processes} trainer processes (spawn) on one shared-memory model; "
                             f"stage pid {os.getpid()}")
    sess.notes["hogwild_pids"] = [rep["pid"] for rep in reports]
    save_checkpoint(sess.checkpoint_path, state)
    _write_seed_records(sess, result, repeat)
    if repeat == 0:
        _write_scalars(sess, reports[0]["steps"], val)
    if cfg.dry_run:
        sess.notes["checkpoint_verified"] = _verify_checkpoint(sess)
    row = _result_row(sess, repeat, [rep["summary"] for rep in reports], result, started)
    from study.flops import fill_mfu

    fill_mfu(row, sess)
    return row


def _write_scalars(sess: Any, steps: list, val: Any) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(sess.profile_dir)) as writer:
        for rec in steps:  # trainer 0's curve; the others train the same model on other shards
            if rec.step % sess.cfg.log_every == 0:
                writer.add_scalar("train/loss", rec.loss, rec.step)
        writer.add_scalar("val/loss", val.loss, val.epoch)
        for k, v in val.metrics.items():
            writer.add_scalar(f"val/{k}", v, val.epoch)


def launch(spec: Any, pass_name: str, repeat: int) -> dict[str, Any]:
    """Entry point from study.worker.main for stages with launcher == "hogwild"."""
    from study.worker import _PASS_MODULES, build_session

    sess = build_session(spec)
    if pass_name == "timing":
        return hogwild_timing_pass(sess, repeat).__dict__
    import importlib

    sess.notes["hogwild"] = f"profiled one process of {sess.cfg.world_size}"
    mod = importlib.import_module(f"study.profiling.{_PASS_MODULES[pass_name]}")
    return {"profiles": mod.run(sess)}


@register
class Hogwild(Optimization):
    name = "hogwild"
    description = "lock-free asynchronous SGD: N CPU processes train one shared-memory model"
    value_help = "N"
    conflicts = ("dp", "ddp")

    def parse_value(self, value: str | None) -> int:
        return int(parse_int("hogwild", value, minimum=2, default=DEFAULT_PROCESSES))

    def applicable(self, env: Env) -> tuple[bool, str]:
        if env.device_type != "cpu":
            return False, "hogwild shares a CPU model between processes; on an accelerator use ddp"
        return True, ""

    def configure(self, cfg: RunConfig) -> RunConfig:
        return hogwild_config(cfg, self.value)
