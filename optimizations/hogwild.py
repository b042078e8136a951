"""hogwild: asynchronous data-parallel training of one shared-memory model by N CPU processes.

Hogwild! (Recht et al., 2011): the model's tensors live in shared memory; N processes each train on
their own shard of the data and write their SGD updates into the same tensors without locks. Updates
may overwrite each other; for sparse-ish gradients that costs little accuracy and removes every
synchronisation point that DDP has (no all-reduce, no lockstep).

Process model: the stage process builds the session as usual, moves the model into shared memory,
and spawns N trainers. Each trainer builds its own session from the same stage spec (same toggles,
loop, loaders), adopts the shared tensors in place of its freshly built ones, takes shard `rank` of
the training set (DistributedSampler's split, without a process group), and runs the one training
loop (through `study.train.fit`) with its own optimizer (momentum buffers are per process, as in the
original algorithm). Trainers start together behind a barrier. The stage process then validates the
shared model once, saves the checkpoint and writes the stage row: throughput is all trainers' measured
samples over the longest trainer's measured time, the same rule as DDP. Per-epoch validation happens
only after the last epoch (the trainers do not stop for it). Profiling passes run one process: they
explain the step, which is the same loop.
"""
from __future__ import annotations

import os
import queue as queue_mod
import time
import traceback
from typing import Any

import torch

from optimizations.base import Cost, Env, Optimization, Plan, TrainContext, parse_int, register, split_cores
from study.core.config import RunConfig


DEFAULT_PROCESSES = 2
BARRIER_TIMEOUT_S = 900


def hogwild_plan(plan: Plan, cfg: RunConfig, env: Env, processes: int) -> Plan:
    return plan.replace(launcher="hogwild", world_size=processes, threads=split_cores(cfg, processes, env))


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


def trainer_process(spec: Any, kit: Any, rank: int, processes: int, shared: dict[str, torch.Tensor], out: Any,
                    barrier: Any) -> None:
    """One Hogwild trainer (a spawned process): its own session on the shared weights, the one loop
    on its shard, no validation (the stage process validates the shared model once at the end)."""
    try:
        from study.train.fit import StopPolicy, fit

        sess = kit.build_session(spec)
        cfg = sess.cfg
        adopt_shared(sess.state.base_model, shared)
        kit.seed_everything(cfg.seed + rank)  # own augmentation stream per trainer
        sess.ctx.rank, sess.ctx.world_size = rank, processes  # its shard; no process group
        train_loader, _ = kit.build_loaders(cfg, sess.bundle, sess.ctx)
        barrier.wait(timeout=BARRIER_TIMEOUT_S)
        result = fit(sess.state, train_loader, None, StopPolicy(epochs=cfg.epochs, steps_per_epoch=cfg.steps),
                     warmup=sess.warmup, hooks=kit.progress_hooks(sess))
        out.put({"rank": rank, "pid": os.getpid(), "summary": kit.rank_summary(result.steps, sess.ctx.device),
                 "steps": result.steps, "epochs": result.epochs})
    except BaseException as e:  # noqa: BLE001 — the stage process reports it
        barrier.abort()
        out.put({"rank": rank, "pid": os.getpid(), "error": f"{type(e).__name__}: {e}",
                 "traceback": traceback.format_exc()[-3000:]})
        raise SystemExit(1) from None


def run_trainers(spec: Any, kit: Any, model: torch.nn.Module, processes: int) -> list[dict[str, Any]]:
    """Spawn `processes` trainers on the shared `model`; returns their reports, rank order.

    spawn, not fork: the parent has already run OpenMP/MKL thread pools, which are not fork-safe.
    """
    import torch.multiprocessing as mp

    shared = shared_tensors(model)
    mpc = mp.get_context("spawn")
    out = mpc.Queue()
    barrier = mpc.Barrier(processes)
    procs = [mpc.Process(target=trainer_process, args=(spec, kit, i, processes, shared, out, barrier),
                         name=f"hogwild-{i}") for i in range(processes)]
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


def train_shared(sess: Any, kit: Any) -> tuple[Any, list[dict[str, Any]]]:
    """The stage trainer of a Hogwild stage (a study.stage.timing_pass.Trainer): spawn the trainers, then
    validate and checkpoint the shared model once. Throughput follows the one rule of every stage
    (study.stage.timing_pass.median_throughput): all trainers' measured samples over the measured time
    of the slowest trainer."""
    from study.train.checkpoints import save_checkpoint
    from study.train.fit import LoopResult
    from study.train.loop import EpochRecord, validate

    cfg, ctx, state = sess.cfg, sess.ctx, sess.state
    processes = sess.plan.world_size
    reports = run_trainers(sess.spec, kit, state.base_model, processes)
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
    return result, [rep["summary"] for rep in reports]


@register
class Hogwild(Optimization):
    name = "hogwild"
    description = "lock-free asynchronous SGD: N CPU processes train one shared-memory model"
    value_help = "N"
    conflicts = ("dp", "ddp")
    prior = 110
    cost = Cost(warm_s=5.0)  # spawning the trainers
    plans = ("launcher", "world_size", "threads")
    stage_trainer = staticmethod(train_shared)

    def parse_value(self, value: str | None) -> int:
        return int(parse_int("hogwild", value, minimum=2, default=DEFAULT_PROCESSES))

    def applicable(self, env: Env) -> tuple[bool, str]:
        if env.device_type != "cpu":
            return False, "hogwild shares a CPU model between processes; on an accelerator use ddp"
        return True, ""

    @classmethod
    def search_values(cls, env: Env) -> list[str | None]:
        return [str(DEFAULT_PROCESSES)] if env.device_type == "cpu" and env.cpu_count >= 2 else []

    def configure(self, plan: Plan, cfg: RunConfig, env: Env) -> Plan:
        return hogwild_plan(plan, cfg, env, self.value)

    def setup(self, ctx: TrainContext) -> None:
        # Profiling passes run the stage in one process: they explain the step, which is the same loop.
        ctx.notes["hogwild"] = f"profiled one process of {ctx.plan.world_size}"
