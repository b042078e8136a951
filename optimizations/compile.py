"""compile: torch.compile (TorchDynamo + Inductor) in one of its modes.

Compilation is lazy: it happens on the first forward/backward, and again on the first validation
forward (eval mode is another graph). The worker's warm-up steps are excluded from every timing
figure, so the compile time lands in `warmup_seconds`; configure() makes sure there are at least
two warm-up steps (the first compiles, the second confirms nothing recompiles). On CPU Inductor
generates C++ and needs a working compiler; when it fails the stage fails with the real error.
"""
from __future__ import annotations

from typing import Any

from optimizations.base import ORDER_GRAPH, Env, Optimization, TrainContext, register
from study.config import ConfigError, RunConfig

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
MIN_WARMUP = 2


def compile_model(model: Any, mode: str = "default") -> Any:
    if mode not in MODES:
        raise ValueError(f"unknown torch.compile mode {mode!r}")
    import torch  # here, not at module level: the parent plans stages without torch

    # A compile error must fail the stage, not fall back to eager and be measured as "compiled".
    torch._dynamo.config.suppress_errors = False
    return torch.compile(model, mode=mode)


@register
class Compile(Optimization):
    name = "compile"
    description = "torch.compile (Inductor); compile time is reported as warm-up, never as step time"
    value_help = "default|reduce-overhead|max-autotune"
    conflicts = ("script",)
    order = ORDER_GRAPH

    def parse_value(self, value: str | None) -> str:
        if value is None:
            return "default"
        if value not in MODES:
            raise ConfigError(f"bad value for compile: {value!r}; expected one of: {', '.join(MODES)}")
        return value

    def configure(self, cfg: RunConfig, env: Env) -> RunConfig:
        return cfg if cfg.warmup >= MIN_WARMUP else cfg.replace(warmup=MIN_WARMUP)

    def wrap_model(self, model: Any, ctx: TrainContext) -> Any:
        ctx.notes["compile"] = f"mode={self.value}; compile time is in warmup_seconds"
        return compile_model(model, self.value)
