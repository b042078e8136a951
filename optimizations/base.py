"""The Optimization protocol, the registry and stack parsing.

A toggle implements only the hooks it needs; every hook is a no-op by default, so the training loop
never asks "is amp on?" — it calls the hooks of whatever toggles are active. Everything else about a
toggle lives on its class too: the values the search tries here, its prior rank, what its first run
costs, the bottlenecks it addresses and how, the plan fields it writes and its conflicts. The advice
and the search ask this registry; neither names a toggle.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

from study.core.config import ConfigError, RunConfig
from study.train.context import TrainContext
from study.core.machine import Env, cpu_has_bf16
from study.models.facts import ModelFacts
from study.core.stage_plan import Plan

__all__ = ["Env", "TrainContext", "Plan", "ModelFacts", "DoesNotApply", "check_fits", "cpu_has_bf16", "Optimization", "Cost", "REGISTRY", "register",
           "load_all", "parse_stack", "parse_int", "canonical", "configure_all", "split_cores", "candidates",
           "conflicts_of", "fixes_for", "toggle_name", "setter_of"]

# Canonical wrapping order (lower wraps first, i.e. innermost): memory format → precision →
# script/compile → DP/DDP. The stack order only decides the ladder, never the wrapping order.
ORDER_MEMORY_FORMAT = 10
ORDER_PRECISION = 20
ORDER_GRAPH = 30
ORDER_PARALLEL = 40
ORDER_OTHER = 50

# Modules of toggles that live outside this package (a user's plug-ins), comma-separated. An
# environment variable because every stage process must register the same toggles as the parent, and
# children inherit the environment.
PLUGINS_ENV = "STUDY_TOGGLES"


@dataclass(frozen=True)
class Cost:
    """What a run with this toggle costs beyond the stack under it, before anything was measured."""

    warm_s: float = 0.0  # every run (process start-up of more ranks, tracing, a compile cache hit)
    cold_s: Mapping[str, float] | None = None  # the first run, by device type (a cold compile)

    def first_run_s(self, device_type: str) -> float:
        cold = (self.cold_s or {}).get(device_type, 0.0)
        return cold or self.warm_s


class Optimization:
    """Base toggle. Subclasses set `name`, `description` and override the hooks they need."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    value_help: ClassVar[str] = ""  # e.g. "N|auto"; empty: takes no value
    conflicts: ClassVar[tuple[str, ...]] = ()  # declared on one side; the registry makes it symmetric
    order: ClassVar[int] = ORDER_OTHER
    # The search tries toggles in this order where no finding points elsewhere (lower first): how
    # often the toggle pays off on a typical vision model.
    prior: ClassVar[int] = 100
    cost: ClassVar[Cost] = Cost()
    # bottleneck (a name of study.advice's rules) -> how this toggle addresses it, one clause
    addresses: ClassVar[Mapping[str, str]] = {}
    # Plan fields this toggle's configure() writes: a config file naming one is refused with our name.
    plans: ClassVar[tuple[str, ...]] = ()
    # A toggle that replaces how the stage process trains (hogwild spawns trainers on one shared
    # model) sets this to a trainer, called as trainer(session, kit) (study.stage.timing_pass); None: the one
    # loop runs in the stage process.
    stage_trainer: ClassVar[Callable[..., Any] | None] = None

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

    @classmethod
    def search_values(cls, env: Env) -> list[str | None]:
        """The values worth measuring on this machine (None: the toggle as it is); [] leaves it out."""
        return [None]

    # -- hooks (all no-ops by default) ------------------------------------------------------------
    def applicable(self, env: Env) -> tuple[bool, str]:
        return True, ""

    def caveat(self, env: Env) -> str:
        """What a user should know before expecting a gain here, though the toggle applies (bf16
        emulated on this CPU); `study list` shows it. Empty: nothing."""
        return ""

    def fits(self, model: ModelFacts) -> tuple[bool, str]:
        """Whether this toggle can change anything for this model and its inputs, and why not. Asked
        in the parent before any stage starts (the stage is then skipped with the reason and the
        toggle left out of later stages), and again in the stage process (DoesNotApply)."""
        return True, ""

    def configure(self, plan: Plan, cfg: RunConfig, env: Env) -> Plan:
        """Plan-time, in the parent: the loader and launch settings of the stages with this toggle."""
        return plan

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


class DoesNotApply(RuntimeError):
    """A toggle's fits() said no inside a stage process: the stage fails with this reason."""


def check_fits(toggles: list[Optimization], facts: Callable[[], ModelFacts]) -> None:
    """Ask the toggles that have a say (they override fits); `facts` is called only for them, since it
    reads samples of the data."""
    asking = [t for t in toggles if type(t).fits is not Optimization.fits]
    model = facts() if asking else None
    for t in asking:
        ok, reason = t.fits(model)
        if not ok:
            raise DoesNotApply(f"{t.spec} does not apply to this model: {reason}")


REGISTRY: dict[str, type[Optimization]] = {}
_CONFLICTS: set[frozenset[str]] = set()


def register(cls: type[Optimization]) -> type[Optimization]:
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    REGISTRY[cls.name] = cls
    _CONFLICTS.update(frozenset((cls.name, other)) for other in cls.conflicts)
    return cls


def conflicts_of(name: str) -> list[str]:
    """Every toggle `name` conflicts with, whichever of the two declared it."""
    return sorted(next(iter(pair - {name})) for pair in _CONFLICTS if name in pair and len(pair) == 2)


def load_all() -> dict[str, type[Optimization]]:
    """Import every toggle module of this package, and the plug-in modules named in $STUDY_TOGGLES,
    so each registers itself."""
    import importlib
    import pkgutil

    import optimizations

    for mod in pkgutil.iter_modules(optimizations.__path__):
        if mod.name != "base" and not mod.name.startswith("_"):
            importlib.import_module(f"optimizations.{mod.name}")
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"cannot import the toggle module {module!r} named in ${PLUGINS_ENV}: {e}; "
                              f"put its folder on PYTHONPATH") from None
    return REGISTRY


def toggle_name(spec: str) -> str:
    return spec.partition("=")[0].strip()


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
        clash = [other for other in conflicts_of(name) if other in seen]
        if clash:
            raise ConfigError(f"toggles {clash[0]!r} and {name!r} conflict; keep one of them in --stack")
        seen.add(name)
        toggles.append(REGISTRY[name](value.strip() if "=" in item else None))
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


def configure_all(cfg: RunConfig, toggles: list[Optimization], env: Env) -> Plan:
    """The stage's plan: the baseline's, changed by each toggle in ladder order."""
    plan = Plan()
    for t in toggles:
        plan = t.configure(plan, cfg, env)
    return plan


def split_cores(cfg: RunConfig, processes: int, env: Env) -> int:
    """Threads per process when `processes` CPU processes share this node, so a multi-process stage
    uses the same cores the single-process baseline used (never more threads than asked for)."""
    share = max(1, env.cpu_count // processes)
    return min(cfg.threads, share) if cfg.threads else share


# --- what the search and the advice ask ----------------------------------------------------------

def by_prior() -> list[type[Optimization]]:
    load_all()
    return sorted(REGISTRY.values(), key=lambda c: (c.prior, c.name))


def candidates(env: Env, stack: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Toggle specs worth trying on top of `stack` here: applicable, not in the stack already, not in
    conflict with it, each useful value of a toggle once; in prior order."""
    stack = list(stack)
    have = {toggle_name(s) for s in stack}
    out = []
    for cls in by_prior():
        if cls.name in have:
            continue
        for value in cls.search_values(env):
            spec = cls.name if value is None else f"{cls.name}={value}"
            try:
                (toggle,) = parse_stack([spec])
                if not toggle.applicable(env)[0]:
                    continue
                parse_stack(stack + [spec])  # conflicts
            except ConfigError:
                continue
            out.append(spec)
    return out


def fixes_for(bottleneck: str) -> tuple[str, ...]:
    """Names of the toggles that address `bottleneck`, in prior order."""
    return tuple(c.name for c in by_prior() if bottleneck in c.addresses)


def how_of(toggle: str, bottleneck: str) -> str:
    """How `toggle` (a name or a spec such as amp=bf16) addresses `bottleneck`; "" when it does not."""
    cls = REGISTRY.get(toggle_name(toggle))
    return cls.addresses.get(bottleneck, "") if cls else ""


def first_run_cost(toggle: str, device_type: str, first: bool) -> float:
    """Seconds a run with `toggle` adds to the stack under it (its first run: a cold compile)."""
    load_all()
    cls = REGISTRY.get(toggle_name(toggle))
    if cls is None:
        return 0.0
    return cls.cost.first_run_s(device_type) if first else cls.cost.warm_s


def setter_of(plan_field: str) -> str:
    """The toggle whose configure() writes `plan_field` ("" when none declares it)."""
    return next((c.name for c in by_prior() if plan_field in c.plans), "")
