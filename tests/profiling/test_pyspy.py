"""py-spy pass: the wrapper records samples as SVG + speedscope, or says why it could not; where py-spy
can attach (an independent probe says so) a real profile is required."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from study.profiling.pyspy import flamegraph_svg, speedscope_stacks, wrap_command
from tests.profiling.pyspy_probe import pyspy_can_attach

REPO = Path(__file__).resolve().parents[2]

# Stands in for the stage worker: burns some CPU, then writes the payload where --out says.
FAKE_WORKER = (
    "import json, sys\n"
    "def spin():\n"
    "    s = 0\n"
    "    for i in range(3_000_000): s += i\n"
    "spin()\n"
    "out = sys.argv[sys.argv.index('--out') + 1]\n"
    "open(out, 'w').write(json.dumps({'profiles': {'stage': 'ran'}}))\n"
)


def run_wrapped(tmp_path: Path, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    payload = tmp_path / "pyspy.json"
    cmd = wrap_command([sys.executable, "-c", FAKE_WORKER, "--out", str(payload)], tmp_path / "prof")
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=120)
    return proc, json.loads(payload.read_text()) if payload.exists() else {}


def test_wrap_command_runs_the_worker_under_the_wrapper(tmp_path):
    cmd = wrap_command(["python", "-m", "study.stage", "--out", "x.json"], tmp_path, rate=50)
    assert cmd[1:3] == ["-m", "study.profiling.pyspy"]
    assert cmd[cmd.index("--rate") + 1] == "50"
    assert cmd[cmd.index("--") + 1:] == ["python", "-m", "study.stage", "--out", "x.json"]


def test_speedscope_to_flamegraph():
    doc = {"shared": {"frames": [{"name": "train_step", "file": "/x/loop.py", "line": 120},
                                 {"name": "<module>", "file": "/x/worker.py", "line": 1},
                                 {"name": 'process 7:"python -m study.stage"', "file": "", "line": 0}]},
           "profiles": [{"type": "sampled", "name": "Process 7 Thread 7", "samples": [[2, 1, 0], [2, 1], [2, 1, 0]],
                         "weights": [0.01, 0.01, 0.01]}]}
    stacks = speedscope_stacks(doc)
    assert stacks[("Process 7 Thread 7", "<module> (worker.py:1)", "train_step (loop.py:120)")] == pytest.approx(0.02)
    svg = flamegraph_svg(stacks, "t")
    root = ET.fromstring(svg)  # well-formed
    titles = [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert any(t.startswith("train_step (loop.py:120)") and "66.7%" in t for t in titles)


def test_missing_pyspy_is_recorded_and_the_pass_goes_on(tmp_path):
    proc, payload = run_wrapped(tmp_path, env={"STUDY_PYSPY": str(tmp_path / "no-such-py-spy")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "not installed" in payload["error"]


def test_pyspy_that_cannot_attach_is_recorded_with_its_reason(tmp_path):
    fake = tmp_path / "py-spy"
    fake.write_text("#!/bin/sh\necho 'Error: Permission Denied: Try running again with elevated permissions'\nexit 1\n")
    fake.chmod(0o755)
    proc, payload = run_wrapped(tmp_path, env={"STUDY_PYSPY": str(fake)})
    assert proc.returncode == 0
    assert "Permission Denied" in payload["error"] and "CAP_SYS_PTRACE" in payload["error"]


def test_real_pyspy_writes_svg_and_speedscope(tmp_path):
    attach, why = pyspy_can_attach()
    if not attach:  # decided by the probe, not by the pass: a pass that only failed cannot skip
        pytest.skip(f"py-spy cannot attach to a process here: {why}")
    proc, payload = run_wrapped(tmp_path)
    out = tmp_path / "prof"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "error" not in payload, payload["error"]
    assert payload["profiles"]["stage"] == "ran"  # the worker's own payload is kept
    assert Path(payload["profiles"]["pyspy_svg"]) == out / "pyspy.svg"
    assert Path(payload["profiles"]["pyspy_speedscope"]) == out / "pyspy.speedscope.json"
    doc = json.loads((out / "pyspy.speedscope.json").read_text())
    assert sum(len(prof["samples"]) for prof in doc["profiles"]) > 0
    assert "spin" in {frame["name"] for frame in doc["shared"]["frames"]}  # the busy function was sampled
    ET.parse(out / "pyspy.svg")
    assert "spin" in (out / "pyspy.svg").read_text()
