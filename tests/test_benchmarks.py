"""The benchmarks run (they are not timed here: their figures are read by people, not asserted)."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.util import REPO

# the scripts; the simulated machines beside them are modules the search benchmarks import
BENCHMARKS = sorted(p for p in (REPO / "benchmarks").glob("*.py") if '__name__ == "__main__"' in p.read_text())


@pytest.mark.slow  # one interpreter a script, most importing torch
@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_each_benchmark_explains_itself(script: Path) -> None:
    p = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=REPO,
                       stdin=subprocess.DEVNULL, timeout=120)
    assert p.returncode == 0, p.stderr
    what = ast.get_docstring(ast.parse(script.read_text())).splitlines()[0]  # what it measures, in its own words
    assert p.stdout.startswith("usage:") and what and what in p.stdout, p.stdout


@pytest.mark.slow
def test_overhead_table_times_all_four_loops(synthetic_root: Path, tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "overhead.py"), "--data-root", str(synthetic_root),
                        "--models", "tiny", "--threads", "1", "--rounds", "1", "--steps", "12", "--warmup", "2",
                        "--subset", "512", "--table"], capture_output=True, text=True, cwd=tmp_path,
                       stdin=subprocess.DEVNULL, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    (ratio_row,) = [ln for ln in p.stdout.splitlines() if ln.startswith("| tiny | 1 |") and "–" in ln]
    cells = [c.strip() for c in ratio_row.strip("|").split("|")]
    bare, study, ratio = float(cells[2]), float(cells[3]), float(cells[4])
    assert bare > 0 and study > 0 and ratio == pytest.approx(study / bare, rel=0.01)  # one round: the same ratio
    phase_rows = [ln for ln in p.stdout.splitlines() if re.match(r"\| tiny \| 1 \| [a-z]", ln)]
    assert len(phase_rows) == 4, p.stdout
    for row in phase_rows:
        nums = [float(c) for c in row.strip("|").split("|")[3:]]
        data, fwd, bwd, opt, step, sps = nums
        assert fwd > 0 and bwd > 0 and step > 0 and sps > 0, row
        # Phases are means over the 10 measured steps, the step their median: one step stalled by another
        # tenant (10x) lifts the means by 0.9 steps. A phase timer that counts twice or more still fails.
        assert data + fwd + bwd + opt <= step * 2.5, row
    keep = next(r for r in phase_rows if "set_to_none=False" in r)
    assert "python -m study" in phase_rows[-1] and "worker" in phase_rows[-2] and keep == phase_rows[1]
