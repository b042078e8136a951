"""The arithmetic and the decisions of a search round: pure functions on hand-made numbers, no runs.

Speed-up intervals from paired ratios, the order of runs within a pass, each candidate's verdict, the
stopping rule (`decide`), and which candidates fit what is left of the budget.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Callable

from study.core.stats import geometric_interval as speedup_interval  # noqa: F401 (the search's name for it)

INCUMBENT_EVERY = 4  # candidates measured between two runs of the incumbent within a pass
# A candidate below this ratio in its first run is not measured again that round. Low enough that one
# run caught by another tenant's burst of load (a third slower is seen on a shared 2-core machine) does
# not drop a candidate that ties; a toggle this much slower does not come back within noise.
RACE_DROP = 0.70
OUTLIER = 1.5  # an incumbent run this many times off its pass's median is no reference for a ratio
RETRY_BELOW = 0.90  # a candidate whose interval lay below this in a round is not tried in later rounds

KEPT, FASTER, NO_GAIN, SLOWER = "kept", "faster", "no gain", "slower"
DROPPED, FAILED, CUT, NOT_RETRIED = "dropped", "failed", "cut by budget", "not retried"
BUSY = "too busy"  # every run of it met a busy machine (study.core.machine_load): no evidence either way


@dataclass(frozen=True)
class Strategy:
    """What the search does beyond greedy forward selection (all off: greedy as it was)."""

    name: str = "greedy"
    race: int = 1  # a candidate that could still win is measured up to race × --repeats times in its round
    # another value of a toggle in the stack is a candidate (workers=2 -> workers=8), and so is a toggle
    # in the place of one it conflicts with (hogwild=2 for ddp=2)
    swaps: bool = False
    readmit: bool = False  # dropped and slower candidates come back in later rounds (only failed ones stay out)
    pairs: int = 0  # where no single move wins, up to this many pairs of moves are tried together
    robust: float = 0.0  # a ratio more than this many times off its candidate's median is left out (0: none)
    confirm_drop: bool = False  # a candidate is dropped below RACE_DROP only when two runs say so
    honest_nothing: bool = False  # "nothing helps" carries the best candidate's interval, not 1.00 [1.00-1.00]
    # A candidate is kept only if it gains at least this: the more runs racing takes, the surer a
    # neutral toggle's few-tenths-of-a-per-cent wobble looks, and such a toggle is no answer.
    min_gain: float = 0.0


GREEDY = Strategy()
# What --stack auto runs, chosen by benchmarks/search_quality.py (the README's table): racing with
# drops confirmed by a second run, robust ratios, swaps, readmission and up to 20 pairs where stuck.
RACING = Strategy("racing", race=3, robust=OUTLIER, confirm_drop=True, swaps=True, readmit=True, pairs=20,
                  honest_nothing=True, min_gain=0.02)
STRATEGIES = {"greedy": GREEDY, "racing": RACING}


# --- the arithmetic of a round (pure, tested on hand-made numbers) -------------------------------


def pass_sequence(specs: list[str], pass_index: int, every: int = INCUMBENT_EVERY) -> list[tuple[str, str, int]]:
    """(role, spec, slot) in the order one pass runs them: the incumbent first and after every `every`
    candidates (slot counts its runs), candidates rotated by pass so none is always first after it."""
    if not specs:
        return []
    k = pass_index % len(specs)
    order = specs[k:] + specs[:k]
    seq, slot = [("incumbent", "", 0)], 1
    for i in range(0, len(order), every):
        seq += [("candidate", s, 0) for s in order[i:i + every]]
        seq.append(("incumbent", "", slot))
        slot += 1
    return seq


def fan_sequences(specs: list[str], pass_index: int, nodes: int, every: int = INCUMBENT_EVERY,
                  cost: Callable[[str], float] | None = None) -> list[list[tuple[str, str, int]]]:
    """A pass cut into one block per node (at most one per candidate): each block is a pass_sequence of
    its share of the candidates, the incumbent first and last, so each candidate is divided only by
    incumbent runs of its own node. With `cost` (a candidate's estimated seconds) the shares are
    balanced, the costliest first to the least loaded block, so one slow candidate (a cold compile)
    does not hold up the pass while others wait. Slots count on across blocks: every run keeps a key
    of its own. With one node: [pass_sequence(specs, pass_index)]."""
    if not specs:
        return []
    k = pass_index % len(specs)
    order = specs[k:] + specs[:k]
    n = max(1, min(nodes, len(order)))
    shares: list[list[str]] = [[] for _ in range(n)]
    if cost is None or n == 1:
        q, r = divmod(len(order), n)
        start = 0
        for b in range(n):  # n shares as even as they come, the larger ones first
            shares[b] = order[start:start + q + (b < r)]
            start += len(shares[b])
    else:
        load = [0.0] * n
        for spec in sorted(order, key=lambda s: -cost(s)):
            b = min(range(n), key=lambda i: (load[i], i))
            shares[b].append(spec)
            load[b] += cost(spec)
        shares = [[s for s in order if s in share] for share in shares]  # each in the pass's rotated order
    blocks, offset = [], 0
    for share in shares:
        seq = pass_sequence(share, 0, every)
        blocks.append([(role, spec, slot + offset if role == "incumbent" else slot) for role, spec, slot in seq])
        offset += sum(role == "incumbent" for role, _, _ in seq)
    return blocks


def pass_wave(p: int, passes: int, seen: int, nodes: int) -> list[int]:
    """The passes measured at once from pass `p` on: one on one machine; on several nodes every pass up
    to the next point where the rules look at what the passes so far found (the drop after the first
    `seen` runs, the end of the `passes`, each racing pass after them), their blocks shared out to the
    nodes as they come free."""
    if nodes == 1:
        return [p]
    limit = min(seen, passes) if p < seen else (passes if p < passes else p + 1)
    return list(range(p, max(limit, p + 1)))


def paired_ratios(seq: list[tuple[str, str, float | None]], outlier: float = OUTLIER,
                  pass_runs: list[float] | None = None) -> dict[str, list[float]]:
    """Per candidate: its samples/s ÷ the geometric mean of the incumbent runs just before and just
    after it in one pass. `seq` holds (role, spec, samples/s or None for a failed or missing run).

    An incumbent run more than `outlier` times off the median of the pass's incumbent runs was caught
    by another tenant's burst of load; it is no reference (its neighbour, or the pass's median, is).
    A block of a pass fanned out over nodes (`pass_runs`: the incumbent runs of all the pass's blocks)
    tells an outlier by the whole pass's median, since its own two runs cannot, and divides only by its
    own runs: with neither usable, the candidate gets no ratio from this pass."""
    inc = [t for r, _, t in seq if r == "incumbent" and t]
    median = statistics.median(inc) if inc else None
    judge_by = statistics.median(pass_runs) if pass_runs else median

    def usable(t: float | None) -> bool:
        if not t or judge_by is None:
            return bool(t)
        return (not pass_runs and len(inc) < 3) or 1 / outlier <= t / judge_by <= outlier

    if pass_runs:
        median = None  # another node's median is never a reference
    out: dict[str, list[float]] = {}
    for i, (role, spec, tp) in enumerate(seq):
        if role != "candidate" or not tp:
            continue
        before = next((t for r, _, t in reversed(seq[:i]) if r == "incumbent" and t), None)
        after = next((t for r, _, t in seq[i + 1:] if r == "incumbent" and t), None)
        refs = [t for t in (before, after) if usable(t)] or ([median] if median else [])
        if refs:
            out.setdefault(spec, []).append(tp / math.exp(statistics.fmean(math.log(t) for t in refs)))
    return out


def trimmed(ratios: list[float], outlier: float = OUTLIER) -> list[float]:
    """The ratios without those more than `outlier` times off their median (a run caught by a burst of
    another tenant's load, which the incumbent runs around it did not see); with fewer than three no
    median can tell which one is off, and all are kept."""
    if len(ratios) < 3:
        return list(ratios)
    m = statistics.median(ratios)
    return [r for r in ratios if 1 / outlier <= r / m <= outlier]


@dataclass
class Outcome:
    """One candidate in one round: what was measured and what the round made of it."""

    round: int
    spec: str
    stack: tuple[str, ...]  # the incumbent's toggles + this candidate
    ratios: list[float] = field(default_factory=list)
    speedup: float = math.nan
    low: float = math.nan
    high: float = math.nan
    throughput: float = 0.0  # median samples/s of its runs
    runs: int = 0
    seconds: float = 0.0  # wall time of its runs
    busy_runs: int = 0  # its runs, or the incumbent runs beside them, during which others used much of the CPU
    decision: str = ""
    detail: str = ""


def judge(o: Outcome, min_gain: float = 0.0) -> str:
    """The decision an interval supports on its own (before the round picks its winner); a gain
    below `min_gain` is no gain, however sure."""
    if o.decision in (DROPPED, FAILED, CUT, NOT_RETRIED, BUSY):
        return o.decision
    if not math.isfinite(o.low):
        return NO_GAIN
    if o.low > 1.0:
        return FASTER if o.speedup >= 1.0 + min_gain else NO_GAIN
    if o.high < 1.0:
        return SLOWER
    return NO_GAIN


def decide(outcomes: list[Outcome], min_gain: float = 0.0) -> str | None:
    """The stopping rule. Marks every outcome; returns the spec to keep: the fastest candidate whose
    interval lies above 1.0, or None (the search stops)."""
    for o in outcomes:
        o.decision = judge(o, min_gain)
    faster = [o for o in outcomes if o.decision == FASTER]
    if not faster:
        return None
    best = max(faster, key=lambda o: o.speedup)
    best.decision = KEPT
    return best.spec


def not_retried(o: Outcome) -> bool:
    """Whether a candidate is left out of later rounds after this outcome."""
    return o.decision in (DROPPED, FAILED) or (o.decision == SLOWER and o.high < RETRY_BELOW)


def round_cost(specs: list[str], first: Callable[[str], float], rest: Callable[[str], float],
               incumbent: float, passes: int, every: int = INCUMBENT_EVERY) -> float:
    """Seconds a round of these candidates takes if none is dropped on the way."""
    cand = sum(first(s) + (passes - 1) * rest(s) for s in specs)
    return cand + passes * incumbent * (math.ceil(len(specs) / every) + 1)


def fit_round(order: list[str], first: Callable[[str], float], rest: Callable[[str], float], incumbent: float,
              passes: int, seconds_left: float) -> tuple[list[str], list[str]]:
    """(measured, cut): the candidates, best-ranked first, that the time left pays for; a costly one
    that does not fit is cut while cheaper ones after it may still fit."""
    chosen: list[str] = []
    cut: list[str] = []
    for spec in order:
        if round_cost(chosen + [spec], first, rest, incumbent, passes) <= seconds_left:
            chosen.append(spec)
        else:
            cut.append(spec)
    return chosen, cut
