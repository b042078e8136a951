"""A simulated machine for `--stack auto`: the real search engine (AutoSearch, the registry's
candidates, conflicts and cost hints) runs against it through its injectable `measure` and `clock`,
so how good the search's answer is can be measured on many machines in seconds.

The machine supplies only what the registry cannot know: what each toggle does to samples/s here
(alone and in pairs), which stacks fail, the noise of a shared machine and how long a run takes.
Costs beyond the steps (a cold compile, process start-up of more ranks) are the registry's own
hints (optimizations.base.Cost), the same figures the engine plans its budget with.

Throughput of a stack: compute samples/s = base × the effects of its toggles × the factors of the
pairs it holds (a pair that only pays together, or two that cancel), and the input pipeline's rate
× the data effects (workers); a step waits for both in turn (1/tp = 1/compute + 1/data), or, with
a toggle that prefetches (workers), for the slower of the two; so a compute toggle pays little while
the loader starves the step. Each run then draws log-normal noise, and a burst of load from a busy
neighbour, while it lasts, slows every run by its factor.
"""
from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field
from typing import Mapping

from optimizations.base import Env, candidates, first_run_cost, toggle_name
from study.core.records import StageResult


@dataclass(frozen=True)
class Bursts:
    """A busy neighbour: bursts start at random (Poisson, `per_hour`), last an exponential time of mean
    `mean_s` and slow every run while they last by a factor drawn in [low, high]."""

    per_hour: float = 6.0
    mean_s: float = 120.0
    low: float = 1.3
    high: float = 3.0


@dataclass(frozen=True)
class Profile:
    """What one machine does with each stack. Keys of `effects`, `data_effects`, `pairs` and `fails`
    name a spec (amp=bf16) or a toggle (amp: any of its values)."""

    name: str
    env: Env
    base_tp: float  # the baseline's compute-only samples/s (before waiting for data)
    effects: Mapping[str, float] = field(default_factory=dict)  # factor on compute samples/s, alone
    pairs: Mapping[tuple[str, str], float] = field(default_factory=dict)  # extra factor when both are in
    fails: tuple[tuple[str, ...], ...] = ()  # a stack holding all of one of these fails to run here
    data_tp: float = math.inf  # samples/s the input pipeline delivers in the training process
    data_effects: Mapping[str, float] = field(default_factory=dict)  # factor on the pipeline's rate
    # toggles whose presence lets loading overlap the step (workers prefetch): a step then waits for the
    # slower of the two, else for both in turn
    overlap: tuple[str, ...] = ()
    noise: float = 0.03  # per-run log-normal sigma of samples/s
    bursts: Bursts | None = None
    startup_s: float = 15.0  # a run's wall time outside its timed steps (process start, data, validation)
    steps_s: float = 10.0  # the baseline's warm-up and timed steps, wall seconds
    batch_size: int = 32
    source: str = ""  # where the figures come from, one line

    def with_(self, **kw) -> "Profile":
        from dataclasses import replace

        return replace(self, **kw)


def holds(stack: tuple[str, ...] | list[str], key: str) -> bool:
    """Whether `stack` holds `key` (a spec, or a toggle name matching any of its values)."""
    return any(s == key or ("=" not in key and toggle_name(s) == key) for s in stack)


def factor(table: Mapping[str, float], spec: str) -> float:
    return table.get(spec, table.get(toggle_name(spec), 1.0))


def rates(p: Profile, stack: tuple[str, ...] | list[str]) -> tuple[float, float] | None:
    """(compute samples/s, data samples/s) of `stack` on this machine, noise-free; None: it fails here."""
    if any(all(holds(stack, k) for k in group) for group in p.fails):
        return None
    compute = p.base_tp * math.prod(factor(p.effects, s) for s in stack)
    compute *= math.prod(f for (a, b), f in p.pairs.items() if holds(stack, a) and holds(stack, b))
    data = p.data_tp * math.prod(factor(p.data_effects, s) for s in stack)
    return compute, data


def data_share(p: Profile, stack: tuple[str, ...] | list[str], r: tuple[float, float]) -> float:
    """The share of a step spent waiting for the loader."""
    if any(holds(stack, k) for k in p.overlap):
        return max(0.0, 1.0 - r[1] / r[0]) if r[1] < r[0] else 0.0
    return (1.0 / r[1]) / (1.0 / r[0] + 1.0 / r[1])


def true_throughput(p: Profile, stack: tuple[str, ...] | list[str]) -> float:
    """Samples/s of `stack` without noise; 0.0 where it fails."""
    r = rates(p, stack)
    if r is None:
        return 0.0
    if any(holds(stack, k) for k in p.overlap):
        return min(r)
    return 1.0 / (1.0 / r[0] + 1.0 / r[1])


def speedup(p: Profile, stack: tuple[str, ...] | list[str]) -> float:
    return true_throughput(p, stack) / true_throughput(p, ())


def run_seconds(p: Profile, stack: tuple[str, ...], tp: float, cold: bool) -> float:
    """Wall seconds of one run at `tp` samples/s: start-up, the steps (fewer seconds when faster), and
    what the registry says the toggles add (a cold compile on a stack's first run)."""
    extra = sum(first_run_cost(s, p.env.device_type, cold) for s in stack)
    return p.startup_s + p.steps_s * true_throughput(p, ()) / max(tp, 1e-9) + extra


@functools.lru_cache(maxsize=16)
def all_stacks(env: Env) -> tuple[tuple[str, ...], ...]:
    """Every stack the search could reach here: each set of candidates (one value per toggle, no
    conflicts, as the registry offers them), once, in the registry's order. The registry's rules are
    pairwise (one value per toggle, declared conflicts), so a set is allowed when each pair is."""
    specs = candidates(env)
    fits = {a: set(candidates(env, (a,))) for a in specs}
    out: list[tuple[str, ...]] = []

    def grow(stack: tuple[str, ...], rest: list[str]) -> None:
        out.append(stack)
        for i, spec in enumerate(rest):
            if all(spec in fits[s] for s in stack):
                grow(stack + (spec,), rest[i + 1:])

    grow((), specs)
    return tuple(out)


@dataclass
class Exhaustive:
    """Every stack measured without noise: the best, its speed-up, and what measuring them all costs
    (each stack `repeats` runs, its first one cold, no bursts: the cheapest exhaustive search)."""

    best: tuple[str, ...]
    best_speedup: float
    stacks: int
    seconds: float
    runs: int


def exhaustive(p: Profile, repeats: int) -> Exhaustive:
    base = true_throughput(p, ())
    best, best_tp, seconds = (), base, 0.0
    stacks = all_stacks(p.env)
    for st in stacks:
        tp = true_throughput(p, st)
        seconds += run_seconds(p, st, tp or base, True) + (repeats - 1) * run_seconds(p, st, tp or base, False)
        if tp > best_tp * (1 + 1e-9):
            best, best_tp = st, tp
    return Exhaustive(best, best_tp / base, len(stacks), seconds, len(stacks) * repeats)


class SimulatedMachine:
    """`measure` and `clock` for AutoSearch: each run returns a noisy row of the profile's throughput
    and moves the clock by the run's wall time. Deterministic for a seed and a sequence of runs."""

    def __init__(self, profile: Profile, seed: int = 0) -> None:
        self.p = profile
        self.rng = random.Random(seed)
        self.now = 0.0
        self.runs: list[tuple[str, ...]] = []
        self.warm: set[frozenset[str]] = set()  # stacks whose compile cache is filled
        self.bursts: list[tuple[float, float, float]] = []  # (start, end, factor)
        self._burst_horizon = 0.0

    def clock(self) -> float:
        return self.now

    def slowdown(self, t0: float, t1: float) -> tuple[float, float]:
        """(mean factor by which bursts slowed [t0, t1), the share of it they covered)."""
        b = self.p.bursts
        if b is None or t1 <= t0:
            return 1.0, 0.0
        while self._burst_horizon < t1:  # draw bursts lazily, in time order: a run never sees the future
            self._burst_horizon += self.rng.expovariate(b.per_hour / 3600.0)
            length = self.rng.expovariate(1.0 / b.mean_s)
            self.bursts.append((self._burst_horizon, self._burst_horizon + length, self.rng.uniform(b.low, b.high)))
        extra, covered = 0.0, 0.0
        for start, end, f in self.bursts:
            overlap = min(end, t1) - max(start, t0)
            if overlap > 0:
                extra += overlap * (f - 1.0)
                covered += overlap
        return 1.0 + extra / (t1 - t0), min(covered / (t1 - t0), 1.0)

    def measure(self, sspec, pass_index: int, tag: str) -> tuple[StageResult, float]:
        stack = tuple(sspec.stack)
        self.runs.append(stack)
        key = frozenset(stack)
        cold = key not in self.warm
        self.warm.add(key)
        r = rates(self.p, stack)
        ident = dict(run="sim", stage=0, name=sspec.name, stack=list(stack), device=self.p.env.device_type,
                     batch_size=self.p.batch_size)
        if r is None:
            seconds = self.p.startup_s + sum(first_run_cost(s, self.p.env.device_type, cold) for s in stack)
            self.now += seconds
            return StageResult(status="failed", error="RuntimeError: this stack does not run here (simulated)",
                               **ident), seconds
        tp_true = true_throughput(self.p, stack)
        nominal = run_seconds(self.p, stack, tp_true, cold)
        slow, covered = self.slowdown(self.now, self.now + nominal)
        tp = tp_true / slow * math.exp(self.rng.gauss(0.0, self.p.noise))
        seconds = run_seconds(self.p, stack, tp, cold)
        self.now += seconds
        # The run's own interval over its steps: its noise, widened when a burst covered part of it
        # (some steps slow, some not).
        spread = math.exp(2 * self.p.noise) * (slow if 0 < covered < 1 else 1.0)
        step = self.p.batch_size / tp
        waits = data_share(self.p, stack, r)
        compute = step * (1.0 - waits)
        return StageResult(status="ok", throughput=tp, throughput_ci_low=tp / spread, throughput_ci_high=tp * spread,
                           t_data=step * waits, t_forward=0.35 * compute, t_backward=0.55 * compute,
                           t_optimizer=0.10 * compute, data_wait_share=waits, **ident), seconds


class SimulatedCluster:
    """`nodes` identical simulated machines for a search fanned out over them (AutoSearch's `nodes`): each
    block of a pass runs on its own machine from the pass's start, and the pass ends when its slowest
    block does. Each machine has its own noise, bursts and compile cache; `clock` is the wall time."""

    def __init__(self, profile: Profile, nodes: int, seed: int = 0) -> None:
        self.machines = [SimulatedMachine(profile, seed * 1000 + i) for i in range(nodes)]
        self.count = nodes
        self.current: int | None = None  # the node whose block runs now (blocks run one after another here)

    def clock(self) -> float:
        if self.current is not None:
            return self.machines[self.current].now
        return max(m.now for m in self.machines)

    @property
    def runs(self) -> list[tuple[str, ...]]:
        return [r for m in self.machines for r in m.runs]

    def measure(self, node: int, sspec, pass_index: int, tag: str) -> tuple[StageResult, float, str]:
        row, seconds = self.machines[node].measure(sspec, pass_index, tag)
        return row, seconds, f"sim-{node}"

    def run(self, blocks) -> list:
        """The blocks in order, each on the node that comes free first (as RayNodes shares them out)."""
        start = max(m.now for m in self.machines)
        for m in self.machines:
            m.now = start
        out = []
        for block in blocks:
            self.current = min(range(self.count), key=lambda i: (self.machines[i].now, i))
            out.append(block(self.current))
        self.current = None
        end = max(m.now for m in self.machines)
        for m in self.machines:  # the pass ends with its slowest block; then the next pass starts on all
            m.now = end
        return out


@dataclass
class Trial:
    """One search on one simulated machine, against the truth."""

    profile: str
    p: Profile
    stack: tuple[str, ...]
    claimed: tuple[float, float, float]  # the speed-up the search reports, with its interval
    speedup: float  # the true speed-up of its stack
    best: Exhaustive
    seconds: float  # simulated wall time of the search, its final check included
    runs: int
    stopped: str
    rounds: int = 0

    @property
    def ratio(self) -> float:
        """The found stack's true samples/s over the exhaustive best's."""
        return self.speedup / self.best.best_speedup

    @property
    def found(self) -> bool:
        return self.ratio >= 1 / 1.05

    @property
    def idle(self) -> int:
        """Toggles of the answer that do nothing here (without one, the stack is within 1 %)."""
        return sum(speedup(self.p, tuple(x for x in self.stack if x != s)) >= self.speedup / 1.01 for s in self.stack)

    @property
    def wrong_nothing(self) -> bool:
        """The search answered "nothing helps" with an interval that rules out what the best stack gains."""
        return (not self.stack and self.best.best_speedup >= 1.05
                and self.claimed[2] < self.best.best_speedup / 1.05)


def run_search(p: Profile, seed: int, root, *, repeats: int = 3, budget_minutes: float = 1e5,
               best: Exhaustive | None = None, nodes: int = 1, **options) -> Trial:
    """The real search (study.search.AutoSearch) on a simulated machine, or fanned out over `nodes` of
    them; `options` go to AutoSearch (its strategy), its rows to `root`/reports/<name>/results.jsonl."""
    from study.core.config import RunConfig
    from study.search.engine import AutoSearch

    machine: SimulatedMachine | SimulatedCluster = SimulatedMachine(p, seed) if nodes == 1 else \
        SimulatedCluster(p, nodes, seed)
    if nodes > 1:
        options["nodes"] = machine
    cfg = RunConfig(run_name=f"sim-{seed}", reports_root=str(root / "reports"), profiles_root=str(root / "profiles"),
                    repeats=repeats, stack=("auto",), budget_minutes=budget_minutes, profile=(), no_pictures=True,
                    batch_size=p.batch_size)
    measure = machine.measure if nodes == 1 else machine.machines[0].measure
    result = AutoSearch(cfg, p.env, measure=measure, clock=machine.clock, **options).run()
    stack = tuple(result.stack)
    return Trial(p.name, p, stack, (result.speedup, result.low, result.high), speedup(p, stack),
                 best or exhaustive(p, repeats), result.seconds, len(machine.runs), result.stopped, result.rounds)
