"""The stage process: builds data, model and toggles, then runs one pass (timing or a profiler).

Started by the parent (study.stages) as `python -m study.worker --stage S.json --pass P --out R.json`,
through torchrun for DDP stages. A fresh process per pass keeps global state (cudnn flags, threads,
compile caches) from leaking between stages and isolates crashes.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from optimizations.base import Env, TrainContext, canonical, parse_stack
from study.config import ConfigError, RunConfig
from study.loop import PHASES, EpochRecord, LoopResult, StepRecord, TrainState, fit, load_checkpoint, train_epoch
from study.records import (TYPE_BATCH, TYPE_DOWNLOAD_TRAIN, TYPE_DOWNLOAD_VAL, TYPE_TRAIN, TYPE_VAL,
                           StageResult, percentile, mean_ci, seed_rows_to_csv, versions, write_atomic)


PROGRESS_ENV = "STUDY_PROGRESS_FILE"  # set by the parent: write "done total" there after each step


@dataclass
class StageSpec:
    index: int
    name: str
    stack: list[str]  # toggle specs in effect, ladder order
    config: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> "StageSpec":
        return cls(**json.loads(Path(path).read_text()))

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.__dict__, indent=2, sort_keys=True))


def stage_dirs(cfg: RunConfig, spec: StageSpec) -> tuple[Path, Path]:
    """(profiles/<run>/<stage>/, reports/<run>/stages/<stage>/)"""
    return cfg.profile_dir / spec.name, cfg.report_dir / "stages" / spec.name


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass


def _worker_init(worker_id: int) -> None:
    # Each DataLoader worker gets its own numpy/random stream derived from torch's per-worker seed.
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


def build_loaders(cfg: RunConfig, bundle: Any, ctx: TrainContext) -> tuple[Any, Any]:
    from torch.utils.data import DataLoader, DistributedSampler

    common: dict[str, Any] = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                  pin_memory=cfg.pin_memory and ctx.device.type == "cuda",
                                  worker_init_fn=_worker_init)
    if cfg.num_workers:
        common["persistent_workers"] = cfg.persistent_workers
        if cfg.prefetch_factor:
            common["prefetch_factor"] = cfg.prefetch_factor
    gen = torch.Generator().manual_seed(cfg.seed)
    if ctx.world_size > 1:
        train_sampler = DistributedSampler(bundle.train, num_replicas=ctx.world_size, rank=ctx.rank,
                                           shuffle=True, seed=cfg.seed, drop_last=True)
        val_sampler = DistributedSampler(bundle.val, num_replicas=ctx.world_size, rank=ctx.rank,
                                         shuffle=False, drop_last=False)
        train = DataLoader(bundle.train, sampler=train_sampler, drop_last=True, **common)
        val = DataLoader(bundle.val, sampler=val_sampler, **common)
    else:
        train = DataLoader(bundle.train, shuffle=True, drop_last=True, generator=gen, **common)
        val = DataLoader(bundle.val, shuffle=False, **common)
    return train, val


def resolve_device(cfg: RunConfig, env: Env, local_rank: int) -> torch.device:
    if env.device_type == "cuda":
        if cfg.device.startswith("cuda:"):
            return torch.device(cfg.device)
        return torch.device("cuda", local_rank % max(env.cuda_count, 1))
    return torch.device("cpu")


@dataclass
class Session:
    """Everything one pass needs, built once: the same for timing and for every profiler."""

    cfg: RunConfig
    spec: StageSpec
    ctx: TrainContext
    state: TrainState
    train_loader: Any
    val_loader: Any
    bundle: Any
    setup_seconds: float
    profile_dir: Path
    report_dir: Path
    notes: dict = field(default_factory=dict)

    @property
    def checkpoint_path(self) -> Path:
        return self.cfg.report_dir / "checkpoints" / f"{self.spec.name}.pt"

    def run_steps(self, n: int, hooks: list = ()) -> list[StepRecord]:
        """Train exactly n steps (across epochs if the loader runs out): what profiling passes use."""
        out: list[StepRecord] = []
        while len(out) < n:
            self.state.steps_in_epoch = 0
            got = train_epoch(self.state, self.train_loader, max_steps=n - len(out), warmup=0, hooks=hooks)
            if not got:
                break
            out += got
            self.state.epoch += 1
        return out


def build_session(spec: StageSpec) -> Session:
    cfg = RunConfig.from_dict(spec.config)
    toggles = parse_stack(spec.stack) if spec.stack else []
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    env = Env.detect(cfg.device)
    device = resolve_device(cfg, env, local_rank)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend=backend)
    seed_everything(cfg.seed + rank)
    ctx = TrainContext(cfg=cfg, env=env, device=device, rank=rank, local_rank=local_rank, world_size=world)
    ctx.scaler = torch.amp.GradScaler(device.type, enabled=False)
    for t in toggles:
        t.setup(ctx)

    from study.data import open_datasets
    from study.models import build_model
    from study.tasks import build_task

    bundle = open_datasets(cfg)
    train_loader, val_loader = build_loaders(cfg, bundle, ctx)
    task = build_task(cfg.task, bundle.num_classes)

    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every stage
    base_model = build_model(cfg, bundle.num_classes).to(device)
    if ctx.memory_format is not None:
        base_model = base_model.to(memory_format=ctx.memory_format)
    params = [p for p in base_model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                **ctx.optimizer_kwargs)
    model: Any = base_model
    for t in canonical(toggles):
        model = t.wrap_model(model, ctx)
    setup_seconds = time.perf_counter() - t0
    state = TrainState(ctx=ctx, model=model, base_model=base_model, task=task, optimizer=optimizer)
    prof_dir, rep_dir = stage_dirs(cfg, spec)
    return Session(cfg=cfg, spec=spec, ctx=ctx, state=state, train_loader=train_loader,
                   val_loader=val_loader, bundle=bundle, setup_seconds=setup_seconds,
                   profile_dir=prof_dir, report_dir=rep_dir, notes=dict(ctx.notes))


def peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    # ru_maxrss is KiB on Linux: the high-water mark of this process's resident memory
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "host_max_rss"


def rank_summary(steps: list[StepRecord], device: torch.device) -> dict[str, Any]:
    """One process's share of a timing pass, in the form _result_row combines across processes."""
    measured = [r for r in steps if r.measured]
    return {
        "samples": sum(r.samples for r in measured),
        "seconds": sum(r.seconds for r in measured),
        "step_times": [r.seconds for r in measured],
        "phases": {p: sum(r.phases.get(p, 0.0) for r in measured) for p in PHASES},
        "warmup_seconds": sum(r.seconds for r in steps if not r.measured),
        "memory": peak_memory(device),
    }


def _gather(obj: Any, world: int) -> list[Any]:
    if world > 1 and torch.distributed.is_initialized():
        out: list[Any] = [None] * world
        torch.distributed.all_gather_object(out, obj)
        return out
    return [obj]


def timing_pass(sess: Session, repeat: int) -> StageResult:
    """Train with every profiler off; warm-up steps excluded from every figure."""
    cfg, ctx, s = sess.cfg, sess.ctx, sess.state
    sess.profile_dir.mkdir(parents=True, exist_ok=True)
    sess.report_dir.mkdir(parents=True, exist_ok=True)
    if cfg.resume and sess.checkpoint_path.exists():
        load_checkpoint(sess.checkpoint_path, s)
        sess.notes["resumed_from_step"] = s.step
    writer = None
    if repeat == 0 and ctx.rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(sess.profile_dir))

    def log_step(rec: StepRecord) -> None:
        if writer is not None and rec.step % cfg.log_every == 0:
            writer.add_scalar("train/loss", rec.loss, rec.step)
            if rec.measured and rec.seconds > 0:
                writer.add_scalar("train/samples_per_s", rec.samples * ctx.world_size / rec.seconds, rec.step)

    def log_epoch(ep: EpochRecord) -> None:
        if writer is not None:
            writer.add_scalar(f"{ep.split}/loss", ep.loss, ep.epoch)
            for k, v in ep.metrics.items():
                writer.add_scalar(f"{ep.split}/{k}", v, ep.epoch)

    hooks = [log_step]
    progress_file = os.environ.get(PROGRESS_ENV)
    if progress_file and ctx.rank == 0:
        per_epoch = min(cfg.steps or len(sess.train_loader), len(sess.train_loader))
        total = per_epoch * cfg.epochs

        def report_progress(rec: StepRecord) -> None:  # after the step's timer stopped: not timed
            write_atomic(Path(progress_file), f"{rec.step + 1} {total}")

        hooks.append(report_progress)
    started = time.time()
    result = fit(s, sess.train_loader, sess.val_loader, epochs=cfg.epochs, max_steps=cfg.steps,
                 val_steps=cfg.val_steps, warmup=cfg.warmup, hooks=hooks,
                 checkpoint=sess.checkpoint_path, checkpoint_every=cfg.checkpoint_every,
                 on_epoch=log_epoch)
    if writer is not None:
        writer.close()

    ranks = _gather(rank_summary(result.steps, ctx.device), ctx.world_size)
    if ctx.rank == 0:
        _write_seed_records(sess, result, repeat)
    if cfg.dry_run and ctx.rank == 0:
        sess.notes["checkpoint_verified"] = _verify_checkpoint(sess)
    row = _result_row(sess, repeat, ranks, result, started)
    if ctx.rank == 0:
        from study.flops import fill_mfu

        fill_mfu(row, sess)  # after the timed loop: counting FLOPs (on meta) never enters the timing
    return row


def _result_row(sess: Session, repeat: int, ranks: list[dict], result: LoopResult, started: float) -> StageResult:
    cfg, ctx = sess.cfg, sess.ctx
    step_times = ranks[0]["step_times"]
    # All ranks run in lockstep (DDP all-reduce per step); the slowest rank sets the pace.
    seconds = max(r["seconds"] for r in ranks)
    samples = sum(r["samples"] for r in ranks)
    n = len(step_times)
    phases = {p: ranks[0]["phases"][p] / n if n else 0.0 for p in PHASES}
    total = sum(phases.values())
    mean, lo, hi = mean_ci(step_times)
    lo = max(lo, 0.0)  # few noisy steps can push a t-interval below zero; time cannot be negative
    row = StageResult(
        run=cfg.run_name, stage=sess.spec.index, name=sess.spec.name, kind="repeat",
        stack=list(sess.spec.stack), repeat=repeat, repeats=cfg.repeats, task=cfg.task, model=cfg.model,
        dataset=cfg.dataset, device=str(ctx.device), device_name=_device_name(ctx.device),
        world_size=ctx.world_size, threads=torch.get_num_threads(), batch_size=cfg.batch_size,
        steps_measured=n,
        throughput=samples / seconds if seconds else 0.0,
        step_time_p50=percentile(step_times, 0.5), step_time_p90=percentile(step_times, 0.9),
        step_time_ci_low=lo, step_time_ci_high=hi, ci_basis="steps",
        t_data=phases["data"], t_h2d=phases["h2d"], t_forward=phases["forward"],
        t_backward=phases["backward"], t_optimizer=phases["optimizer"],
        data_wait_share=phases["data"] / total if total else 0.0,
        setup_seconds=sess.setup_seconds, warmup_seconds=ranks[0]["warmup_seconds"],
        peak_memory_mb=max(r["memory"][0] for r in ranks), memory_kind=ranks[0]["memory"][1],
        metric_name=sess.state.task.metric_name, metric=result.metrics.get(sess.state.task.metric_name, 0.0),
        metrics=result.metrics, final_loss=result.steps[-1].loss if result.steps else 0.0,
        steps_total=sess.state.step, epochs=cfg.epochs, notes=sess.notes, config_hash=cfg.hash(),
        versions=versions(), started=started, finished=time.time(),
    )
    # Throughput CI over steps of this one run (the aggregate replaces it with one over repeats).
    if n >= 2 and lo > 0:
        per_step = samples / n
        row.throughput_ci_low, row.throughput_ci_high = per_step / hi, per_step / lo
    else:
        row.throughput_ci_low = row.throughput_ci_high = row.throughput
    return row


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    from study.hostinfo import cpuinfo

    name = cpuinfo().get("model name") or platform.processor() or platform.machine()
    return f"{name} ({os.cpu_count()} cores)"


def load_rows(loads: list) -> list[tuple]:
    """Seed records 10/11: time to fetch/open the train/validation split, value1 = items."""
    return [(TYPE_DOWNLOAD_TRAIN if ld.split == "train" else TYPE_DOWNLOAD_VAL, 0, f"{ld.start:.6f}",
             f"{ld.seconds:.6f}", f"{ld.seconds:.6f}", ld.count, "") for ld in loads]


def _write_seed_records(sess: Session, result: LoopResult, repeat: int) -> None:
    """reports/<run>/stages/<stage>/records-r<repeat>.csv in the seed format."""
    rows: list[tuple] = load_rows(sess.bundle.loads)
    for ep in result.epochs:
        t = TYPE_TRAIN if ep.split == "train" else TYPE_VAL
        if sess.cfg.task == "segment":
            v1, v2 = ep.metrics.get("miou", ""), ep.metrics.get("pixel_acc", "")
        else:
            v1, v2 = ep.metrics.get("top1", ""), ep.metrics.get("top5", "")
        if ep.split == "train":
            v1, v2 = ep.loss, ""
        rows.append((t, ep.epoch, f"{ep.start:.6f}", f"{ep.data_wait:.6f}", f"{ep.seconds:.6f}", v1, v2))
    for r in result.steps:
        rows.append((TYPE_BATCH, r.epoch, f"{r.start:.6f}", f"{r.phases.get('data', 0.0):.6f}",
                     f"{r.seconds:.6f}", f"{r.loss:.6f}", r.samples))
    write_atomic(sess.report_dir / f"records-r{repeat}.csv", seed_rows_to_csv(rows))


def _verify_checkpoint(sess: Session) -> bool:
    """Reload the saved checkpoint into a freshly built model; every tensor must match."""
    from study.models import build_model

    state = torch.load(sess.checkpoint_path, map_location="cpu", weights_only=True)
    fresh = build_model(sess.cfg, sess.bundle.num_classes)
    fresh.load_state_dict(state["model"])
    live = sess.state.base_model.state_dict()
    same = all(torch.equal(v.cpu(), live[k].detach().cpu()) for k, v in fresh.state_dict().items())
    return bool(same and state["step"] == sess.state.step)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m study.worker", description=__doc__)
    ap.add_argument("--stage", required=True)
    ap.add_argument("--pass", dest="pass_name", default="timing")
    ap.add_argument("--repeat", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    spec = StageSpec.load(args.stage)
    out = Path(args.out)
    try:
        cfg = RunConfig.from_dict(spec.config)
        if cfg.launcher == "hogwild":
            from optimizations.hogwild import launch

            payload = launch(spec, args.pass_name, args.repeat)
        else:
            sess = build_session(spec)
            if args.pass_name == "timing":
                payload = timing_pass(sess, args.repeat).__dict__
            else:
                import importlib

                mod = importlib.import_module(f"study.profiling.{_PASS_MODULES[args.pass_name]}")
                payload = {"profiles": mod.run(sess)}
            if sess.ctx.rank != 0:
                return 0
        write_atomic(out, json.dumps(payload, default=str))
        return 0
    except ConfigError as e:
        write_atomic(out, json.dumps({"error": str(e), "kind": "config"}))
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BaseException as e:  # noqa: BLE001 — the parent records the real error and goes on
        tb = traceback.format_exc()
        if int(os.environ.get("RANK", 0)) == 0:
            write_atomic(out, json.dumps({"error": f"{type(e).__name__}: {e}", "traceback": tb[-4000:]}))
        print(tb, file=sys.stderr)
        return 1
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


_PASS_MODULES = {"cprofile": "cprofile", "torch": "torch_trace", "pyspy": "pyspy", "lines": "lines"}

if __name__ == "__main__":
    sys.exit(main())
