"""What limits a stage, and which toggles are worth trying next, read from figures a run recorded.

Every rule reads one figure that results.jsonl holds (or a profile summary that a row of it points
to), compares it with one threshold and names the toggles that address it. The rules are one table,
RULES, so any verdict can be checked against it by hand. Findings and advice are data (the figure,
the threshold, the toggle); the report turns them into sentences that quote the figure.

Torch-free and report-free: the search (in the parent process) ranks its candidates with it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Iterable, Mapping

from optimizations.base import candidates as registry_candidates
from optimizations.base import fixes_for, how_of, toggle_name
from study.core.machine import Env
from study.core.machine_load import is_busy
from study.core.stats import stage_speedup

# --- evidence ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """The figures of one stage that the rules read; None where the run did not record one."""

    stage: str
    stack: tuple[str, ...] = ()
    device_type: str = "cpu"
    world_size: int = 1
    data_wait_share: float | None = None  # timing pass: time blocked in next(loader) ÷ step
    optimizer_share: float | None = None  # timing pass: optimizer phase ÷ step
    mfu: float | None = None  # model FLOPs utilization (timing pass)
    memory_share: float | None = None  # peak memory (all processes of the node) ÷ capacity
    device_idle_share: float | None = None  # GPU trace: no kernel, copy or memset running ÷ step
    python_share: float | None = None  # cProfile: own time of Python functions ÷ profiled time
    op_share: float | None = None  # trace: kernels (GPU) or operators (CPU) ÷ step
    comm_share: float | None = None  # trace: exposed communication ÷ step, multi-process stages


def python_share(cprofile: Mapping[str, Any]) -> float | None:
    """Own time of functions written in Python (the framework's and the user's) per profiled second.

    cProfile names C functions with the file "~"; everything else is Python. Only the top rows are
    stored, so this is a lower bound, and cProfile's per-call cost inflates Python time a little."""
    steps = cprofile.get("steps") or 0
    total_ms = float(cprofile.get("total_s") or 0.0) * 1000.0 / steps if steps else 0.0
    if total_ms <= 0:
        return None
    own = sum(float(r.get("tottime_ms", 0.0)) for r in cprofile.get("by_tottime", [])
              if str(r.get("file", "~")) not in ("~", "") and not str(r.get("file", "")).startswith("<"))
    return min(own / total_ms, 1.0)


def evidence_of(row: Any, trace: Mapping[str, Any] | None = None,
                cprofile: Mapping[str, Any] | None = None) -> Evidence:
    """Evidence of one ok stage row (a StageResult), its trace summary and its cProfile table."""
    device_type = "cuda" if str(row.device).startswith("cuda") else "cpu"
    phases = row.t_data + row.t_h2d + row.t_forward + row.t_backward + row.t_optimizer
    capacity = getattr(row, "memory_capacity_mb", 0.0) or 0.0
    # Host memory is shared by every process of a CPU stage; each GPU has its own.
    procs = row.world_size if device_type == "cpu" else 1
    ev: dict[str, Any] = dict(
        stage=row.name, stack=tuple(row.stack), device_type=device_type, world_size=row.world_size,
        data_wait_share=row.data_wait_share if phases > 0 else None,
        optimizer_share=row.t_optimizer / phases if phases > 0 else None,
        mfu=row.mfu or None,
        memory_share=row.peak_memory_mb * procs / capacity if capacity > 0 and row.peak_memory_mb else None)
    if trace and trace.get("step_ms_mean"):
        step, cats = float(trace["step_ms_mean"]), trace.get("categories_ms", {})
        if trace.get("device_events"):
            busy = sum(cats.get(c, 0.0) for c in ("kernel", "memcpy", "memset"))
            ev["device_idle_share"] = max(1.0 - busy / step, 0.0)
            ev["op_share"] = cats.get("kernel", 0.0) / step
        else:
            ev["op_share"] = cats.get("cpu_exec", 0.0) / step
        if row.world_size > 1:
            ev["comm_share"] = cats.get("communication", 0.0) / step
    if cprofile:
        ev["python_share"] = python_share(cprofile)
    return Evidence(**ev)


# --- the rules -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One bottleneck test: `read` takes a figure from the evidence; the rule fires at `threshold`.
    The toggles that address a bottleneck say so themselves (Optimization.addresses); a rule names
    only the bottleneck."""

    bottleneck: str
    figure: str  # what is read, in words
    source: str  # where a reader finds that figure
    threshold: float  # fires when the figure is at or above this
    read: Callable[[Evidence], float | None]
    effect: str  # what the figure means, in words
    # Whether the figure is a share of the step that the fixes can remove: then removing all of it
    # bounds the speed-up at 1 / (1 - share).
    removable: bool = True

    @property
    def fixes(self) -> tuple[str, ...]:
        """Toggles that address this bottleneck, best first (the registry's prior order)."""
        return fixes_for(self.bottleneck)

    def effect_of(self, toggle: str) -> str:
        """Why `toggle` (a name or a spec such as amp=bf16) helps here, in one clause."""
        how = how_of(toggle, self.bottleneck)
        return f"{self.effect}; {how}" if how else self.effect


RULES: tuple[Rule, ...] = (
    Rule("data-bound", "data-wait share of the step", "results.jsonl data_wait_share", 0.10,
         lambda e: e.data_wait_share, "the step waits for its batches"),
    Rule("host-bound", "device idle share of the profiled step", "torch trace: no kernel/copy/memset running",
         0.30, lambda e: e.device_idle_share, "the device waits for the host to launch work"),
    Rule("host-bound", "Python share of the step", "cProfile: own time of Python functions", 0.20,
         lambda e: e.python_share, "the interpreter, not the math, takes the time"),
    Rule("optimizer-heavy", "optimizer share of the step", "results.jsonl t_optimizer ÷ phases", 0.15,
         lambda e: e.optimizer_share, "the parameter update takes a large part of the step"),
    Rule("compute-bound", "model FLOPs utilization", "results.jsonl mfu", 0.40,
         lambda e: e.mfu, "the step is busy with math", removable=False),
    Rule("compute-bound", "operator share of the profiled step", "torch trace: kernels (GPU) or ops (CPU)", 0.80,
         lambda e: e.op_share, "the step is busy with math", removable=False),
    Rule("communication-bound", "exposed all-reduce share of the step", "torch trace: communication", 0.15,
         lambda e: e.comm_share,
         "a larger --batch-size per process amortises each all-reduce; fewer processes all-reduce less"),
    Rule("memory-bound", "peak memory ÷ capacity", "results.jsonl peak_memory_mb ÷ memory_capacity_mb", 0.85,
         lambda e: e.memory_share, "the peak is near what the device holds", removable=False),
)


@dataclass(frozen=True)
class Finding:
    rule: Rule
    value: float

    @property
    def severity(self) -> float:
        """How far past its threshold the figure is (1.0: exactly at it)."""
        return self.value / self.rule.threshold if self.rule.threshold else math.inf

    @property
    def ceiling(self) -> float | None:
        """The speed-up if the fixes removed the whole share (None: not that kind of figure)."""
        if not self.rule.removable or self.value >= 1.0:
            return None
        return 1.0 / (1.0 - self.value)


def diagnose(ev: Evidence, rules: Iterable[Rule] = RULES) -> list[Finding]:
    """The rules that fire for this stage, most severe first."""
    found = []
    for rule in rules:
        v = rule.read(ev)
        if v is not None and math.isfinite(v) and v >= rule.threshold:
            found.append(Finding(rule, v))
    return sorted(found, key=lambda f: -f.severity)


def figures(ev: Evidence, rules: Iterable[Rule] = RULES) -> list[tuple[Rule, float]]:
    """Every figure the rules could read for this stage, fired or not (for "nothing fired" sentences)."""
    out = []
    for rule in rules:
        v = rule.read(ev)
        if v is not None and math.isfinite(v):
            out.append((rule, v))
    return out


# --- what is worth trying here -------------------------------------------------------------------

def candidates(env: Env, stack: Iterable[str] = ()) -> list[str]:
    """Toggle specs worth trying on top of `stack` here (the registry decides: applicable, useful values,
    no conflicts, prior order)."""
    return registry_candidates(env, list(stack))


@dataclass(frozen=True)
class Measured:
    """One measured comparison of a toggle against the stack it was added to."""

    toggle: str
    where: str  # "stage 02-amp" or "search round 1"
    ratio: float
    low: float
    high: float
    diverged: bool = False  # its loss went NaN/inf: however fast, it trained nothing
    busy: bool = False  # others used much of the machine while one side ran: it neither proves nor refutes

    @property
    def gained(self) -> bool:
        return self.low > 1.0 and not self.diverged


# --- advice --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Advice:
    toggle: str  # the spec to add to the stack
    finding: Finding  # the evidence that points at it
    refuted: Measured | None = None  # where this toggle was measured without gain
    why: str = ""  # why it helps here, as the toggle said when the advice was given

    @property
    def reason(self) -> str:
        return self.why or self.finding.rule.effect_of(self.toggle)


def advise(ev: Evidence, findings: list[Finding], env: Env,
           refuted: Mapping[str, Measured] | None = None) -> list[Advice]:
    """Toggles worth trying next on this stage, best first: those the most severe findings point at,
    in each rule's order of fixes; never one already in the stack or not applicable here. A toggle
    measured without gain (`refuted`, see refuted_by) is still listed, after the others, with where
    it was refuted."""
    specs = candidates(env, ev.stack)
    fresh: list[Advice] = []
    seen: set[str] = set()
    for f in findings:
        for name in f.rule.fixes:
            for spec in specs:
                if toggle_name(spec) == name and spec not in seen:
                    seen.add(spec)
                    fresh.append(Advice(spec, f, refuted_by(spec, refuted or {}), f.rule.effect_of(spec)))
    return [a for a in fresh if a.refuted is None] + [a for a in fresh if a.refuted is not None]


def refuted_by(spec: str, refuted: Mapping[str, Measured]) -> Measured | None:
    """The measurement that refuted `spec`: of the same spec, or of the toggle with its default value
    ("amp" refutes amp=bf16 where bf16 is the default; "workers=2" does not refute workers=4)."""
    if spec in refuted:
        return refuted[spec]
    return refuted.get(toggle_name(spec)) if "=" in spec else None


def order_candidates(specs: list[str], findings: list[Finding]) -> list[str]:
    """The search's order: what the findings point at first (most severe first), then the rest as given."""
    first: list[str] = []
    for f in findings:
        for name in f.rule.fixes:
            first += [s for s in specs if toggle_name(s) == name and s not in first]
    return first + [s for s in specs if s not in first]


# --- refutations ---------------------------------------------------------------------------------


def ladder_measurements(stages: list[Any]) -> list[Measured]:
    """Each ladder stage that added one toggle to the previous ok stage, with its measured ratio."""
    out = []
    prev = None
    for r in sorted(stages, key=lambda r: r.stage):
        if r.status != "ok" or r.name.startswith("ablate"):
            continue
        if prev is not None and len(r.stack) == len(prev.stack) + 1 and list(r.stack[:-1]) == list(prev.stack):
            diverged = getattr(r, "diverged_step", -1) >= 0
            busy = is_busy(getattr(r, "foreign_cpu_share", -1.0)) or is_busy(getattr(prev, "foreign_cpu_share", -1.0))
            out.append(Measured(r.stack[-1], f"stage {r.name}" + (" (its loss diverged)" if diverged else "")
                                + (" (on a busy machine)" if busy else ""), *stage_speedup(r, prev), diverged=diverged,
                                busy=busy))
        prev = r
    return out


def refutations(measured: Iterable[Measured]) -> dict[str, Measured]:
    """Toggle specs (and names) measured without gain; the latest measurement of each wins."""
    out: dict[str, Measured] = {}
    for m in measured:
        if m.busy:  # a neighbour's load moved one side: no evidence either way
            continue
        if not m.gained and math.isfinite(m.ratio):
            out[m.toggle] = m
        else:
            out.pop(m.toggle, None)
    return out


@dataclass
class StageVerdict:
    """Everything the report says about one stage."""

    evidence: Evidence
    findings: list[Finding] = field(default_factory=list)
    advice: list[Advice] = field(default_factory=list)


def stage_verdict(ev: Evidence, env: Env, refuted: Mapping[str, Measured] | None = None) -> StageVerdict:
    found = diagnose(ev)
    return StageVerdict(ev, found, advise(ev, found, env, refuted))


# --- the verdict as recorded ---------------------------------------------------------------------
# A run records each stage's verdict in results.jsonl when it ends (kind "verdict"), so its report says
# what was decided on that machine with that registry, not what today's code would decide.


def verdict_record(v: StageVerdict) -> dict[str, Any]:
    ev = {k: (list(x) if isinstance(x, tuple) else x) for k, x in asdict(v.evidence).items()}
    findings = [{"bottleneck": f.rule.bottleneck, "figure": f.rule.figure, "source": f.rule.source,
                 "threshold": f.rule.threshold, "effect": f.rule.effect, "removable": f.rule.removable,
                 "value": f.value} for f in v.findings]
    advice = [{"toggle": a.toggle, "why": a.reason, "finding": v.findings.index(a.finding),
               "refuted": asdict(a.refuted) if a.refuted else None} for a in v.advice]
    return {"evidence": ev, "findings": findings, "advice": advice}


def verdict_from_record(d: Mapping[str, Any]) -> StageVerdict:
    """The StageVerdict a run recorded; a rule the code no longer has keeps its recorded wording."""
    known = {(r.bottleneck, r.figure): r for r in RULES}
    names = {f.name for f in fields(Evidence)}
    ev = d.get("evidence") or {}
    evidence = Evidence(**{k: (tuple(x) if isinstance(x, list) else x) for k, x in ev.items() if k in names})
    findings = []
    for f in d.get("findings") or []:
        rule = known.get((f["bottleneck"], f["figure"])) or Rule(
            f["bottleneck"], f["figure"], f.get("source", ""), float(f["threshold"]), lambda e: None,
            f.get("effect", ""), bool(f.get("removable", True)))
        findings.append(Finding(rule, float(f["value"])))
    advice = []
    for a in d.get("advice") or []:
        refuted = Measured(**a["refuted"]) if a.get("refuted") else None
        advice.append(Advice(a["toggle"], findings[int(a["finding"])], refuted, a.get("why", "")))
    return StageVerdict(evidence, findings, advice)
