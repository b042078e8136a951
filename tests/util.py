"""Helpers shared by tests: run the CLI the way a user does, read what it wrote."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_study(*args: str, cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO)
    full_env["COLUMNS"] = "200"
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env, stdin=subprocess.DEVNULL)


def results(cwd: Path, run: str) -> list[dict]:
    path = cwd / "reports" / run / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stage_rows(cwd: Path, run: str) -> list[dict]:
    return [r for r in results(cwd, run) if r["kind"] == "stage"]


def records(cwd: Path, run: str) -> list[dict]:
    with open(cwd / "reports" / run / "records.csv", newline="") as fh:
        return list(csv.DictReader(fh))
