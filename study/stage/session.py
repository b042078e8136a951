"""A stage's session: data, model, optimizer and toggles, built once per process.

The timing pass and every profiling pass use the same session, so a profile explains exactly the
step that was timed. Hogwild trainers build their own session from the same spec.
"""
from __future__ import annotations

import datetime
import functools
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from optimizations.base import Optimization, canonical, check_fits, parse_stack
from study.core.config import RunConfig
from study.train.context import TrainContext
from study.core.machine import Env
from study.core.stage_plan import Plan
from study.train.fit import StopPolicy, fit
from study.train.loop import StepRecord, TrainState
from study.models.facts import facts_of
from study.core.stage_spec import StageSpec


COLLECTIVE_TIMEOUT_MIN = 10  # NCCL's default; gloo's is 30


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    import numpy as np

    np.random.seed(seed % 2**32)


def seed_loader_worker(worker_id: int) -> None:
    # Each DataLoader worker gets its own numpy/random stream derived from torch's per-worker seed.
    import numpy as np

    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def example_inputs(dataset: Any, device: Any = "cpu", memory_format: Any = None, n: int = 2) -> torch.Tensor:
    """The inputs of the first n samples, batched as the loader batches them (2: BatchNorm in train
    mode needs more than one), on the stage's device and in its memory format."""
    from torch.utils.data import default_collate

    x = default_collate([dataset[i][0] for i in range(min(n, len(dataset)))]).to(device)
    return x.contiguous(memory_format=memory_format) if memory_format is not None else x


def build_loaders(cfg: RunConfig, bundle: Any, ctx: TrainContext) -> tuple[Any, Any]:
    """Train and validation loaders; with world_size > 1 each rank reads its own shard."""
    from torch.utils.data import DataLoader, DistributedSampler

    plan = ctx.plan
    common: dict[str, Any] = dict(batch_size=plan.per_process_batch(cfg.batch_size), num_workers=plan.num_workers,
                                  pin_memory=plan.pin_memory and ctx.device.type == "cuda",
                                  worker_init_fn=seed_loader_worker)
    if plan.num_workers:
        common["persistent_workers"] = plan.persistent_workers
        if plan.prefetch_factor:
            common["prefetch_factor"] = plan.prefetch_factor
    batch = common["batch_size"]
    if hasattr(bundle.train, "for_loader"):  # a sharded stream: each rank and worker reads its own span, in order
        train = DataLoader(bundle.train.for_loader(ctx.rank, ctx.world_size, batch, drop_last=True), drop_last=True,
                           generator=torch.Generator().manual_seed(cfg.seed), **common)
        val = DataLoader(bundle.val.for_loader(ctx.rank, ctx.world_size, batch, drop_last=False), **common)
    elif ctx.world_size > 1:
        train_sampler = DistributedSampler(bundle.train, num_replicas=ctx.world_size, rank=ctx.rank,
                                           shuffle=True, seed=cfg.seed, drop_last=True)
        val_sampler = DistributedSampler(bundle.val, num_replicas=ctx.world_size, rank=ctx.rank,
                                         shuffle=False, drop_last=False)
        train = DataLoader(bundle.train, sampler=train_sampler, drop_last=True, **common)
        val = DataLoader(bundle.val, sampler=val_sampler, **common)
    else:
        gen = torch.Generator().manual_seed(cfg.seed)
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

    spec: StageSpec
    toggles: list[Optimization]
    ctx: TrainContext
    state: TrainState
    train_loader: Any
    val_loader: Any
    bundle: Any
    setup_seconds: float
    notes: dict = field(default_factory=dict)

    @property
    def cfg(self) -> RunConfig:
        return self.ctx.cfg

    @property
    def plan(self) -> Plan:
        return self.ctx.plan

    @property
    def warmup(self) -> int:
        """Untimed steps at the start: the user's --warmup, or more where a toggle needs them (compile)."""
        return max(self.cfg.warmup, self.plan.min_warmup)

    @property
    def profile_dir(self) -> Path:
        return self.spec.profile_dir

    @property
    def report_dir(self) -> Path:
        return self.spec.report_dir

    @property
    def checkpoint_path(self) -> Path:
        return self.spec.checkpoint_path

    def run_steps(self, n: int, hooks: list = ()) -> list[StepRecord]:
        """Train n more steps from a fresh pass over the loader (across epochs if it runs out), no
        validation: what the profiling passes run."""
        self.state.steps_in_epoch = 0
        return fit(self.state, self.train_loader, None, StopPolicy(steps=n), hooks=hooks).steps


def build_session(spec: StageSpec) -> Session:
    cfg, plan = spec.config, spec.plan
    toggles = parse_stack(list(spec.stack)) if spec.stack else []
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    env = Env.detect(cfg.device)
    device = resolve_device(cfg, env, local_rank)
    threads = plan.threads or cfg.threads
    if threads:
        torch.set_num_threads(threads)
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # A rank that dies is torchrun's to handle (it stops the others at once); a rank that hangs would
        # hold the others in a collective for gloo's default 30 minutes. Fail the stage after 10 instead.
        torch.distributed.init_process_group(backend=backend,
                                             timeout=datetime.timedelta(minutes=COLLECTIVE_TIMEOUT_MIN))
    seed_everything(cfg.seed + rank)
    ctx = TrainContext(cfg=cfg, env=env, device=device, plan=plan, rank=rank, local_rank=local_rank, world_size=world)
    ctx.scaler = torch.amp.GradScaler(device.type, enabled=False)
    for t in toggles:
        t.setup(ctx)

    from study.data import open_datasets
    from study.models.builtins import build_model
    from study.train.tasks import build_task

    bundle = open_datasets(cfg)
    train_loader, val_loader = build_loaders(cfg, bundle, ctx)
    sized = hasattr(train_loader.dataset, "__len__")  # a stream without a length shows its end itself
    if sized and len(train_loader) < ctx.micro_batches:  # a stage's own batch (the batch toggle) can outgrow the data
        raise RuntimeError(f"{len(bundle.train)} training samples{f' over {world} processes' if world > 1 else ''} "
                           f"make no full step of {plan.per_process_batch(cfg.batch_size)} x {ctx.micro_batches} "
                           f"per process; use a smaller batch or a larger --subset")
    task = build_task(cfg.task, bundle.num_classes)

    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every stage
    base_model = build_model(cfg, bundle.num_classes).to(device)
    # Two real samples, read only when a toggle asks (script's trace, a toggle's fits()): the baseline
    # reads nothing its loader does not.
    ctx.example = functools.cache(lambda: example_inputs(bundle.train, device, ctx.memory_format))
    check_fits(toggles, lambda: facts_of(base_model, ctx.example()[0]))  # the search plans without a preflight
    if ctx.memory_format is not None:
        base_model = base_model.to(memory_format=ctx.memory_format)
    params = [p for p in base_model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                **ctx.optimizer_kwargs)
    model: Any = base_model
    for t in canonical(toggles):
        model = t.wrap_model(model, ctx)
    setup_seconds = time.perf_counter() - t0
    from study.train.checkpoint_meta import checkpoint_meta

    state = TrainState(ctx=ctx, model=model, base_model=base_model, task=task, optimizer=optimizer,
                       meta=checkpoint_meta(cfg, bundle.num_classes, bundle.classes) | {"stage_hash": spec.hash()})
    return Session(spec=spec, toggles=toggles, ctx=ctx, state=state, train_loader=train_loader,
                   val_loader=val_loader, bundle=bundle, setup_seconds=setup_seconds, notes=dict(ctx.notes))
