"""The statistics every figure of the study goes through, in one place: percentiles, the median's
interval over the steps of one run, the t-interval of a positive figure over repeats (on its log), the geometric mean of paired
ratios with its interval, and the conservative interval of a ratio of two measured figures.

Pure and dependency-free: the stage process, the search (in the parent) and the report share it.
"""
from __future__ import annotations

import math
import statistics
from typing import Any

# Two-sided 95% Student t quantiles for df = 1..30 (beyond: normal 1.96).
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042]


def t95(df: int) -> float:
    return _T95[df - 1] if 1 <= df <= len(_T95) else 1.96


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval; with fewer than two values the interval is the value itself."""
    if not values:
        return 0.0, 0.0, 0.0
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, m, m
    half = t95(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return m, m - half, m + half


def log_ci(values: list[float]) -> tuple[float, float, float]:
    """Geometric mean and 95 % t-interval of a positive quantity (samples/s, a step time) over a few
    runs, computed on its logarithm: never below zero, and as wide as the runs disagree in ratio, which
    is how run-to-run noise of a timing behaves. With fewer than two values the interval is the value."""
    vals = [v for v in values if v > 0 and math.isfinite(v)]
    if not vals:
        return 0.0, 0.0, 0.0
    logs = [math.log(v) for v in vals]
    m = statistics.fmean(logs)
    if len(logs) < 2:
        return vals[0], vals[0], vals[0]
    half = t95(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(m), math.exp(m - half), math.exp(m + half)


def median_ci(values: list[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free ~95% interval of the median from order statistics (the binomial rank
    interval, normal approximation): no negative times, no zero width for a noisy stage. With fewer
    than six values it is the full range."""
    if not values:
        return 0.0, 0.0
    v = sorted(values)
    k = max(int((len(v) - z * len(v) ** 0.5) / 2), 0)
    return v[k], v[len(v) - 1 - k]


def geometric_interval(ratios: list[float], single: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """Geometric mean of paired ratios and its 95 % t-interval on log ratios. With one pair the
    interval is `single` (the two runs' own intervals divided crosswise), else the ratio itself."""
    ratios = [r for r in ratios if r > 0 and math.isfinite(r)]
    if not ratios:
        return math.nan, math.nan, math.nan
    logs = [math.log(r) for r in ratios]
    m = statistics.fmean(logs)
    if len(logs) < 2:
        lo, hi = single if single is not None else (ratios[0], ratios[0])
        return ratios[0], lo, hi
    half = t95(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(m), math.exp(m - half), math.exp(m + half)


def crosswise(cur: Any, ref: Any, ratio: float | None = None) -> tuple[float, float, float]:
    """Throughput ratio of two measured rows (anything with throughput and throughput_ci_low/high)
    and its conservative interval: the ends of the two 95 % CIs divided crosswise. `ratio`, when given,
    is the ratio as measured some other way (paired runs); the interval keeps its relative width."""
    if not ref.throughput or not cur.throughput:
        return math.nan, math.nan, math.nan
    own = cur.throughput / ref.throughput
    r = own if ratio is None else ratio
    scale = r / own
    lo = cur.throughput_ci_low / ref.throughput_ci_high * scale if ref.throughput_ci_high else r
    hi = cur.throughput_ci_high / ref.throughput_ci_low * scale if ref.throughput_ci_low else r
    return r, lo, hi


def stage_speedup(cur: Any, ref: Any) -> tuple[float, float, float]:
    """Throughput ratio of two stage rows with its 95 % interval. Stages timed in the same rounds pair
    run r with run r: the geometric mean of the paired ratios and its t-interval on their logs (drift
    over the study falls on both runs of a pair). A stage measured once has no interval (NaN ends): one
    run's steps are not independent samples of the stage's speed. Rows of older runs, without their
    runs' figures: the two intervals divided crosswise."""
    if not ref.throughput or not cur.throughput:
        return math.nan, math.nan, math.nan
    if "steps" in (getattr(cur, "ci_basis", ""), getattr(ref, "ci_basis", "")):
        return cur.throughput / ref.throughput, math.nan, math.nan
    mine, theirs = (getattr(r, "notes", {}).get("repeat_samples_per_s") for r in (cur, ref))
    if mine and theirs and len(mine) == len(theirs):
        return geometric_interval([a / b for a, b in zip(mine, theirs) if b > 0])
    return crosswise(cur, ref)


# Halves of the measured steps whose medians differ by less than this are steady whatever their
# intervals say: a few percent of drift is below what the ladder can resolve anyway.
STEADY_DRIFT = 0.05
MIN_STEADY_STEPS = 8  # fewer measured steps cannot show a trend apart from noise


def steadiness(times: list[float]) -> tuple[bool | None, float]:
    """(steady, drift) of a run's step times: drift is the second half's median over the first's,
    minus 1; steady unless the two medians' intervals do not overlap and the drift exceeds
    STEADY_DRIFT. None when there are too few steps to tell."""
    if len(times) < MIN_STEADY_STEPS:
        return None, 0.0
    half = len(times) // 2
    first, second = times[:half], times[len(times) - half:]
    m1, m2 = statistics.median(first), statistics.median(second)
    drift = m2 / m1 - 1 if m1 > 0 else 0.0
    (lo1, hi1), (lo2, hi2) = median_ci(first), median_ci(second)
    apart = lo2 > hi1 or hi2 < lo1
    return not (apart and abs(drift) > STEADY_DRIFT), drift
