"""The one number formatter: every missing figure reads as the same dash."""
from __future__ import annotations

import math

import pytest

from study.core import fmt


@pytest.mark.parametrize("missing", [None, float("nan"), math.inf, -math.inf])
def test_missing_figures_read_as_a_dash_everywhere(missing):
    assert fmt.num(missing, ".1f") == "–"
    assert fmt.si(missing, "FLOP") == "–"
    assert fmt.speedup(missing, missing, missing) == "–"
    assert fmt.with_interval(missing, 1.0, 2.0) == "–"
    assert fmt.metric("top1", missing) == "–"
    assert fmt.cell(missing) == "–"


def test_num_uses_the_format_spec_and_keeps_zero():
    assert fmt.num(1234.5678, ".1f") == "1234.6"
    assert fmt.num(-0.5, "+.2f") == "-0.50"
    assert fmt.num(0.0, ".2f") == "0.00"  # zero is a figure, not a missing one
    assert fmt.num(None, ".2f", dash="") == ""


@pytest.mark.parametrize("value, unit, text", [
    (1.6e10, "FLOP/s", "16.00 GFLOP/s"), (16e6, "FLOP", "16.00 MFLOP"), (3.2e14, "FLOP/s", "320.00 TFLOP/s"),
    (2e15, "FLOP/s", "2.00 PFLOP/s"), (1500.0, "B", "1.50 kB"), (12.0, "B", "12.00 B"), (0.0, "FLOP", "–")])
def test_si_prefixes(value, unit, text):
    assert fmt.si(value, unit) == text


def test_speedup_shows_its_interval_and_flags_noise():
    assert fmt.speedup(1.0, 1.0, 1.0) == "1.00×"  # the reference itself: no interval
    assert fmt.speedup(2.0, 1.81, 2.21) == "2.00× [1.81–2.21]"
    assert fmt.speedup(1.02, 0.86, 1.21) == "1.02× [0.86–1.21] (noise)"
    assert fmt.speedup(0.5, 0.4, 1.0) == "0.50× [0.40–1.00] (noise)"  # an end at exactly 1.0 is noise too


def test_interval_metric_and_cell_text():
    assert fmt.with_interval(2000.0, 1900.0, 2100.0) == "2000.0 [1900.0–2100.0]"
    assert fmt.interval(0.123, 0.456, ".2f") == "0.12–0.46"
    assert fmt.metric("miou", 0.12345) == "miou 0.123"
    assert fmt.cell(3) == "3" and fmt.cell("a|b") == "a|b" and fmt.cell(0.0) == "0.0"
