"""The Optimization protocol, the registry and stack parsing.

A toggle implements only the hooks it needs; every hook is a no-op by default, so the training loop
never asks "is amp on?" — it calls the hooks of whatever toggles are active.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, ContextManager

from study.config import ConfigError, RunConfig

# Canonical wrapping order (lower wraps first, i.e. innermost): memory format → precision →
# script/compile → DP/DDP. The stack order only decides the ladder, never the wrapping order.
ORDER_MEMORY_FORMAT = 10
ORDER_PRECISION = 20
ORDER_GRAPH = 30
ORDER_PARALLEL = 40
ORDER_OTHER = 50


@dataclass(frozen=True)
class Env:
    """What this machine offers, as far as toggles care."""

    device_type: str  # "cpu" or "cuda"
    cuda_count: int
    cpu_count: int
    bf16_native: bool = False

    @classmethod
    def detect(cls, device: str = "auto") -> "Env":
        import torch

        cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
        dev = device.split(":")[0]
        device_type = ("cuda" if cuda else "cpu") if dev == "auto" else dev
        if device_type == "cuda" and not cuda:
            raise ConfigError("--device cuda asked for, but no CUDA device is visible; use --device cpu")
        bf16 = torch.cuda.is_bf16_supported() if device_type == "cuda" else cpu_has_bf16()
        return cls(device_type=device_type, cuda_count=cuda, cpu_count=os.cpu_count() or 1, bf16_native=bf16)


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic on this CPU (AVX512-BF16 or AMX). Without it bf16 autocast is emulated
    and runs many times slower than fp32: the amp stage shows that, it is not hidden."""
    from study.hostinfo import cpuinfo

    return bool(set(cpuinfo().get("flags", "").split()) & {"avx512_bf16", "amx_bf16"})


@dataclass
class TrainContext:
    """Per-process training state the hooks may read and set before the loop starts."""

    cfg: RunConfig
    env: Env
    device: Any  # torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    autocast: Callable[[], ContextManager] = contextlib.nullcontext
    scaler: Any = None  # torch.amp.GradScaler; disabled one by default
    optimizer_kwargs: dict = field(default_factory=dict)
    memory_format: Any = None  # torch.memory_format for inputs, None keeps contiguous
    notes: dict = field(default_factory=dict)  # what toggles want recorded (e.g. "script: traced")


class Optimization:
    """Base toggle. Subclasses set `name`, `description` and override the hooks they need."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    value_help: ClassVar[str] = ""  # e.g. "N|auto"; empty: takes no value
    conflicts: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()
    order: ClassVar[int] = ORDER_OTHER
    # A toggle that replaces how the stage process trains (hogwild spawns trainers on one shared
    # model) sets this to a study.timing.Trainer; None: the one loop runs in the stage process.
    stage_trainer: ClassVar[Callable[[Any], Any] | None] = None

    def __init__(self, value: str | None = None) -> None:
        self.raw = value
        self.value = self.parse_value(value)

    # -- parsing ----------------------------------------------------------------------------------
    def parse_value(self, value: str | None) -> Any:
        if value is not None:
            raise ConfigError(f"toggle {self.name!r} takes no value, got {self.name}={value}")
        return None

    @property
    def spec(self) -> str:
        return self.name if self.raw is None else f"{self.name}={self.raw}"

    # -- hooks (all no-ops by default) ------------------------------------------------------------
    def applicable(self, env: Env) -> tuple[bool, str]:
        return True, ""

    def configure(self, cfg: RunConfig, env: Env) -> RunConfig:
        """Plan-time (parent, torch-free): loader and launch settings of the stages with this toggle."""
        return cfg

    def setup(self, ctx: TrainContext) -> None:
        """Process-level settings before model and optimizer exist (flags, scaler, optimizer kwargs)."""

    def wrap_model(self, model: Any, ctx: TrainContext) -> Any:
        return model

    def after_run(self, ctx: TrainContext) -> dict[str, Any]:
        """After the timed run (validation included), in the stage process: figures the toggle wants
        in the stage's notes, e.g. what compile did. Never called inside the timed steps."""
        return {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"


REGISTRY: dict[str, type[Optimization]] = {}


def register(cls: type[Optimization]) -> type[Optimization]:
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    REGISTRY[cls.name] = cls
    return cls


def load_all() -> dict[str, type[Optimization]]:
    """Import every toggle module of the package so each registers itself."""
    import importlib
    import pkgutil

    import optimizations

    for mod in pkgutil.iter_modules(optimizations.__path__):
        if mod.name != "base" and not mod.name.startswith("_"):
            importlib.import_module(f"optimizations.{mod.name}")
    return REGISTRY


def parse_stack(items: str | list[str] | tuple[str, ...]) -> list[Optimization]:
    """Parse "workers=4,pin,amp" into toggles; every error is a ConfigError with one clear line."""
    load_all()
    if isinstance(items, str):
        items = [s for s in items.split(",")]
    toggles: list[Optimization] = []
    seen: set[str] = set()
    for item in items:
        item = item.strip()
        if not item:
            raise ConfigError("empty toggle in --stack (two commas, or a trailing comma?)")
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in REGISTRY:
            raise ConfigError(f"unknown toggle {name!r}; valid toggles: {', '.join(sorted(REGISTRY))}")
        if name in seen:
            raise ConfigError(f"toggle {name!r} appears twice in --stack")
        seen.add(name)
        toggles.append(REGISTRY[name](value.strip() if "=" in item else None))
    for t in toggles:
        for other in t.conflicts:
            if other in seen:
                raise ConfigError(f"toggles {t.name!r} and {other!r} conflict; keep one of them in --stack")
    # conflicts are declared on one side only sometimes; check the reverse too
    for t in toggles:
        for cls in REGISTRY.values():
            if t.name in cls.conflicts and cls.name in seen:
                raise ConfigError(f"toggles {cls.name!r} and {t.name!r} conflict; keep one of them in --stack")
    for i, t in enumerate(toggles):
        for need in t.requires:
            if need not in [x.name for x in toggles[:i]]:
                raise ConfigError(f"toggle {t.name!r} needs {need!r} earlier in --stack")
    return toggles


def parse_int(name: str, value: str | None, *, minimum: int, default: int | None = None,
              extra: tuple[str, ...] = ()) -> int | str:
    """Shared value parser: an integer >= minimum, or one of the named words in `extra`."""
    if value is None:
        if default is None:
            raise ConfigError(f"toggle {name!r} needs a value")
        return default
    if value in extra:
        return value
    try:
        n = int(value)
    except ValueError:
        choices = " or ".join(("an integer",) + tuple(repr(e) for e in extra))
        raise ConfigError(f"bad value for {name}: {value!r}; expected {choices}") from None
    if n < minimum:
        raise ConfigError(f"bad value for {name}: {value!r}; must be at least {minimum}")
    return n


def canonical(toggles: list[Optimization]) -> list[Optimization]:
    """Toggles in the one fixed wrapping order (stable for equal orders)."""
    return sorted(toggles, key=lambda t: t.order)


def configure_all(cfg: RunConfig, toggles: list[Optimization], env: Env) -> RunConfig:
    for t in toggles:
        cfg = t.configure(cfg, env)
    return cfg


def split_cores(cfg: RunConfig, processes: int, env: Env) -> int:
    """Threads per process when `processes` CPU processes share this node, so a multi-process stage
    uses the same cores the single-process baseline used (never more threads than asked for)."""
    share = max(1, env.cpu_count // processes)
    return min(cfg.threads, share) if cfg.threads else share
