"""The one way a number becomes text in a table, a plot label or a sentence of the report.

Missing figures (None, NaN, ±inf: a skipped stage, a ratio without a reference) all read as the same
dash, so a reader never has to tell "nan" from "None" from "–".
"""
from __future__ import annotations

import math
from typing import Any

DASH = "–"


def missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v)))


def num(v: Any, spec: str, dash: str = DASH) -> str:
    """`v` formatted with a format spec (".1f", "+.3f", ...), or the dash when there is no figure."""
    return dash if missing(v) else format(v, spec)


def si(v: float, unit: str) -> str:
    """1.6e10, "FLOP/s" -> "16.00 GFLOP/s"; zero means unknown here (no FLOP count, no peak)."""
    if missing(v) or not v:
        return DASH
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.2f} {prefix}{unit}"
    return f"{v:.2f} {unit}"


def interval(lo: float, hi: float, spec: str = ".1f") -> str:
    return f"{format(lo, spec)}–{format(hi, spec)}"


def with_interval(v: Any, lo: float, hi: float, spec: str = ".1f") -> str:
    """"2000.0 [1900.0–2100.0]": a figure with its confidence interval."""
    return DASH if missing(v) else f"{format(v, spec)} [{interval(lo, hi, spec)}]"


ONE_RUN = "one run: no interval"  # a figure measured once: its steps are not independent runs


def speedup(x: float, lo: float, hi: float) -> str:
    """A throughput ratio with its interval; "(noise)" when the interval contains 1.0, and no
    interval at all for the reference itself (1.00×)."""
    if missing(x):
        return DASH
    if lo == hi == x:
        return f"{x:.2f}×"
    if missing(lo) or missing(hi):
        return f"{x:.2f}× ({ONE_RUN})"
    noise = " (noise)" if lo <= 1.0 <= hi else ""
    return f"{x:.2f}× [{interval(lo, hi, '.2f')}]{noise}"


def metric(name: str, v: Any) -> str:
    return DASH if missing(v) else f"{name} {v:.3f}"


def cell(v: Any) -> str:
    """The text of one table cell: the same in the console, Markdown and HTML. Figures arrive here
    already formatted (num, si, ...); anything else is shown as Python prints it."""
    return DASH if missing(v) else str(v)
