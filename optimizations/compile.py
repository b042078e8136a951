"""compile: torch.compile (TorchDynamo + Inductor) in one of its modes.

Compilation is lazy: it happens on the first forward/backward, and again on the first validation
forward (eval mode is another graph). The worker's warm-up steps are excluded from every timing
figure, so the compile time lands in `warmup_seconds`; configure() makes sure there are at least
two warm-up steps (the first compiles, the second confirms nothing recompiles). On CPU Inductor
generates C++ and needs a working compiler; when it fails the stage fails with the real error.

Whether compile pays shows in what it costs and what it could not capture, recorded in the stage's
notes as `compile_stats` (see CompileWatch): compile seconds, graphs, graph breaks and recompiles
with the first reasons, and how many compiled graphs came from Inductor's on-disk cache.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import torch

from optimizations.base import ORDER_GRAPH, Cost, Env, Optimization, Plan, TrainContext, register
from study.core.config import ConfigError, RunConfig
from study.core.faults import first_line

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
MIN_WARMUP = 2
REASONS_KEPT = 3  # reasons recorded per kind (graph breaks, recompiles): the first ones say why


def compile_model(model: Any, mode: str = "default") -> Any:
    if mode not in MODES:
        raise ValueError(f"unknown torch.compile mode {mode!r}")

    # A compile error must fail the stage, not fall back to eager and be measured as "compiled".
    torch._dynamo.config.suppress_errors = False
    return torch.compile(model, mode=mode)


class _Collect(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


# With the `recompiles` and `graph_breaks` logs on (as TORCH_LOGS=recompiles,graph_breaks does),
# Dynamo writes one record per recompile and one per graph break it traces to these artifact loggers.
RECOMPILES_LOGGERS = ("torch._dynamo.guards.__recompiles",)
GRAPH_BREAK_LOGGERS = ("torch._dynamo.symbolic_convert.__graph_breaks", "torch._dynamo.exc.__graph_breaks",
                       "torch._dynamo.convert_frame.__graph_breaks")


def recompile_reason(message: str) -> str:
    """ "Recompiling function forward in .../resnet.py:284 / triggered by ... / - 0/0: GLOBAL_STATE
    changed: grad_mode" → "forward (resnet.py:284): GLOBAL_STATE changed: grad_mode"."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    func, _, path = (lines[0] if lines else message).removeprefix("Recompiling function ").partition(" in ")
    reason = next((ln[1:].strip() for ln in lines[1:] if ln.startswith("-")), "")
    compile_id, sep, rest = reason.partition(": ")
    if sep and "/" in compile_id and " " not in compile_id:  # "0/0: ..." names the cache entry: noise here
        reason = rest
    place = f"{func} ({os.path.basename(path)})" if path else func
    return first_line(f"{place}: {reason}" if reason else place, 200)


def graph_break_reason(message: str) -> str:
    """ "Graph break in user code at /x/model.py:10 / Graph Break Reason: Data-dependent branching ..."
    → "model.py:10: Data-dependent branching"."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    head = lines[0] if lines else message
    where = os.path.basename(head.rpartition(" at ")[2]) if " at " in head else ""
    reason = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Graph Break Reason:")), "")
    return first_line(f"{where}: {reason}" if where else reason or head, 200)


class CompileWatch:
    """What torch.compile did in this process: installed before the first compile, read after the run."""
    def __init__(self) -> None:
        self.recompiles: list[str] = []
        self.graph_breaks: list[str] = []
        torch._logging.set_logs(recompiles=True, graph_breaks=True)
        for names, sink in ((RECOMPILES_LOGGERS, self.recompiles), (GRAPH_BREAK_LOGGERS, self.graph_breaks)):
            for name in names:
                logging.getLogger(name).addHandler(_Collect(sink))

    def stats(self) -> dict[str, Any]:
        from torch._dynamo.utils import compile_times, counters

        names, values = compile_times(repr="csv", aggregate=True)
        seconds = dict(zip(names, (float(v) for v in values)))
        cache = counters.get("inductor", {})
        # A break is traced again on every recompile of its frame: count places, not tracings.
        breaks = list(dict.fromkeys(graph_break_reason(m) for m in self.graph_breaks))
        return {
            # Dynamo frames (forward graphs, Inductor included) + the backward graphs compiled lazily
            # at the first backward: the warm-up steps' cost, and the first validation batch's.
            "seconds": round(seconds.get("_compile.compile_inner", 0.0)
                             + seconds.get("compile_fx.<locals>.bw_compiler", 0.0), 2),
            "graphs": int(counters.get("stats", {}).get("unique_graphs", 0)),
            "graph_breaks": len(breaks),
            "graph_break_reasons": breaks[:REASONS_KEPT],
            "recompiles": len(self.recompiles),
            "recompile_reasons": [recompile_reason(m) for m in self.recompiles[:REASONS_KEPT]],
            "cache_hits": int(cache.get("fxgraph_cache_hit", 0)),
            "cache_misses": int(cache.get("fxgraph_cache_miss", 0)),
        }


@register
class Compile(Optimization):
    name = "compile"
    description = "torch.compile (Inductor); compile time is reported as warm-up, never as step time"
    value_help = "default|reduce-overhead|max-autotune"
    conflicts = ("script",)
    order = ORDER_GRAPH
    prior = 20
    # Inductor compiles the training and the evaluation graphs on a run's first steps; later runs hit
    # its on-disk cache.
    cost = Cost(warm_s=20.0, cold_s={"cpu": 150.0, "cuda": 90.0})
    plans = ("min_warmup",)
    addresses = {
        "host-bound": "the model runs as one compiled graph with fewer, fused launches (CUDA graphs with "
                      "compile=reduce-overhead) instead of one Python call per layer",
        "compute-bound": "fusing the elementwise ops around the convolutions saves memory traffic"}

    @classmethod
    def search_values(cls, env: Env) -> list[str | None]:
        if env.device_type == "cuda":
            return ["default", "reduce-overhead", "max-autotune"]
        # On a CPU reduce-overhead's CUDA graphs do not exist and max-autotune's kernel search covers
        # matmul templates only (convolutions stay oneDNN calls): both compile what the default compiles.
        return ["default"]

    def parse_value(self, value: str | None) -> str:
        if value is None:
            return "default"
        if value not in MODES:
            raise ConfigError(f"bad value for compile: {value!r}; expected one of: {', '.join(MODES)}")
        return value

    def configure(self, plan: Plan, cfg: RunConfig, env: Env) -> Plan:
        return plan.replace(min_warmup=max(plan.min_warmup, MIN_WARMUP))

    def wrap_model(self, model: Any, ctx: TrainContext) -> Any:
        ctx.notes["compile"] = f"mode={self.value}; compile time is in warmup_seconds"
        self.watch = CompileWatch()
        return compile_model(model, self.value)

    def after_run(self, ctx: TrainContext) -> dict[str, Any]:
        watch = getattr(self, "watch", None)
        return {"compile_stats": watch.stats()} if watch is not None else {}
