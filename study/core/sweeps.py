"""The auto sweeps (`workers=auto`, `batch=auto`), run the one way: a toggle measures at plan time,
once per study, in a child process of its own (`python -m study.stage --sweep NAME`), so the sweep's
loader workers and memory are gone before the first stage is timed.

A toggle hands this a job: a key naming what the result depends on, and whatever its measuring side
(study.stage.sweeps) needs. The result is kept three ways: in this process by key (the search plans a
stack many times; every stage with the toggle gets the same answer, so stages stay comparable), in
reports/<run>/<file> for `--resume` (a sweep of the same key is reused rather than measured again,
keeping the stage configs and their hashes stable), and in the stage plan, which carries it to the
stage's notes so results.jsonl alone holds it. Torch-free.
"""
from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.core.child_process import run_child
from study.core.errors import ConfigError
from study.core.records import write_atomic


@dataclass(frozen=True, kw_only=True)
class Sweep:
    name: str
    """The toggle's name, and the sweep's name in `python -m study.stage --sweep NAME`."""
    what: str
    """What it measures, for the one line a failure gets ("data-loader", "batch-size")."""
    file: str
    """Its result in reports/<run>/ (for --resume)."""
    instead: str
    """A fixed value to give instead when the sweep fails ("workers=2")."""


_DONE: dict[tuple[str, str], dict[str, Any]] = {}  # sweeps of this study process, by (name, key)


def load_or_sweep(sweep: Sweep, job: dict[str, Any], report_dir: Path, resume: bool) -> dict[str, Any]:
    """This process's sweep of the same key, or report_dir/<file> on --resume when it measured the same
    key, or a new sweep (then kept in that file)."""
    done = (sweep.name, job["key"])
    if done in _DONE:
        return _DONE[done]
    path = report_dir / sweep.file
    if resume and path.is_file():
        try:
            old = json.loads(path.read_text())
            if old.get("key") == job["key"]:
                return _DONE.setdefault(done, old)
        except (OSError, json.JSONDecodeError):
            pass
    result = measure_in_child(sweep, job)
    write_atomic(path, json.dumps(result, indent=2))
    return _DONE.setdefault(done, result)


def measure_in_child(sweep: Sweep, job: dict[str, Any]) -> dict[str, Any]:
    """Run the sweep in a fresh stage process, started as every child of the study is (dies with the
    study, its log kept, its real error found); its payload is the result, with the job's key."""
    with tempfile.TemporaryDirectory(prefix=f"study-{sweep.name}-sweep-") as tmp:
        job_file, out = Path(tmp) / "job.json", Path(tmp) / "sweep.json"
        job_file.write_text(json.dumps(job))
        payload, err = run_child([sys.executable, "-m", "study.stage", "--sweep", sweep.name, "--job", str(job_file),
                                  "--out", str(out)], Path(tmp) / "sweep.log", out)
    if payload is None:
        raise ConfigError(f"{sweep.name}=auto: the {sweep.what} sweep failed ({err}); give a value instead, "
                          f"e.g. {sweep.instead}")
    return payload | {"key": job["key"]}
