"""ddp: DistributedDataParallel, one process per GPU (or N CPU processes on gloo).

The stage is launched through torchrun (`torch.distributed.run`); the worker initialises the process
group from torchrun's environment (nccl on CUDA, gloo on CPU), gives each rank its shard of the data
through DistributedSampler, and rank 0 gathers every rank's timings. Gradients are all-reduced in
buckets overlapped with the backward pass; with gradient accumulation (batch=N:accumulate) only the
last micro-batch of a step all-reduces (no_sync on the others). On CPU the cores are split between the ranks
(threads = cores // N), so N ranks use the same machine the single-process baseline used.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from optimizations.base import ORDER_PARALLEL, Cost, Env, Optimization, Plan, TrainContext, parse_int, register, split_cores
from study.core.config import ConfigError, RunConfig


CPU_DEFAULT_WORLD = 2


def ddp_plan(plan: Plan, cfg: RunConfig, env: Env, world_size: int | None = None) -> Plan:
    """torchrun launch with `world_size` processes per node (default: one per GPU, else 2 on CPU)."""
    cuda = env.device_type == "cuda"
    n = world_size or (env.cuda_count if cuda else CPU_DEFAULT_WORLD)
    if n * cfg.nnodes < 2:
        raise ConfigError(f"ddp with {n} process on {cfg.nnodes} node is a single process; use ddp=2 or more")
    changes: dict[str, Any] = dict(launcher="torchrun", world_size=n)
    if not cuda:
        changes["threads"] = split_cores(cfg, n, env)
    return plan.replace(**changes)


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.parallel.DistributedDataParallel:
    # Checked in the stage process: a process group exists only there.
    if not torch.distributed.is_available():
        raise RuntimeError("ddp needs torch.distributed, and this torch build has none")
    if not torch.distributed.is_initialized():
        raise RuntimeError("ddp needs an initialised process group; the stage must be started through torchrun")
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)


@register
class Ddp(Optimization):
    name = "ddp"
    description = "DistributedDataParallel via torchrun: N processes (GPUs, or CPU processes on gloo)"
    value_help = "N"
    conflicts = ("dp",)
    order = ORDER_PARALLEL
    prior = 80
    cost = Cost(warm_s=10.0)  # torchrun and a process group per run
    plans = ("launcher", "world_size", "threads")

    @classmethod
    def search_values(cls, env: Env) -> list[str | None]:
        if env.device_type == "cuda":
            return [str(env.cuda_count)] if env.cuda_count >= 2 else []
        return [str(CPU_DEFAULT_WORLD)] if env.cpu_count >= 2 else []

    def parse_value(self, value: str | None) -> int | None:
        return None if value is None else int(parse_int("ddp", value, minimum=1))

    def applicable(self, env: Env) -> tuple[bool, str]:
        # Whether this torch build has torch.distributed is the stage process's question (wrap_ddp):
        # asking it here would import torch into the parent.
        if env.device_type == "cuda" and self.value and self.value > env.cuda_count:
            return False, f"ddp={self.value} needs {self.value} GPUs on this node; it has {env.cuda_count}"
        return True, ""

    def configure(self, plan: Plan, cfg: RunConfig, env: Env) -> Plan:
        return ddp_plan(plan, cfg, env, self.value)

    def wrap_model(self, model: Any, ctx: TrainContext) -> Any:
        wrapped = wrap_ddp(model, ctx.device)
        ctx.accumulating = wrapped.no_sync  # accumulated micro-batches all-reduce once, with the last one
        pids: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(pids, os.getpid())  # evidence of N real processes
        ctx.notes["ddp"] = f"world size {len(pids)}, backend {torch.distributed.get_backend()}"
        ctx.notes["ddp_pids"] = pids
        return wrapped
