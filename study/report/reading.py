"""Reading one run: results.jsonl, config.json and the profile files its rows point to.

Nothing is measured here; every figure of the report comes from these files.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from study.core.records import TYPE_BATCH, StageResult, read_results


def stage_rows(results: list[StageResult]) -> list[StageResult]:
    """The latest aggregate row of each stage of the latest ladder, in ladder order: a --resume with
    another stack keeps the earlier stages' rows, but its ladder is the one its "run" row lists."""
    latest: dict[str, StageResult] = {}
    planned: list[str] | None = None  # rows written before "run" rows listed their stages: all of them
    for r in results:
        if r.kind == "stage":
            latest[r.name] = r
        elif r.kind == "run" and isinstance(r.notes.get("stages"), list):
            planned = r.notes["stages"]
    rows = [r for name, r in latest.items() if planned is None or name in planned]
    return sorted(rows, key=lambda r: r.stage)


class RunData:
    """results.jsonl and the profile files of one run, with paths resolved wherever the study ran."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)
        self.name = self.dir.name
        self.skipped: list[str] = []  # lines of results.jsonl that hold no row, "line N: why"
        self.results = read_results(self.dir / "results.jsonl", self.skipped)
        self.stages = stage_rows(self.results)
        try:
            self.config = json.loads((self.dir / "config.json").read_text())
        except (OSError, json.JSONDecodeError):
            self.config = {}
        self._cache: dict[tuple[str, str], Any] = {}

    @property
    def ok(self) -> list[StageResult]:
        return [r for r in self.stages if r.status == "ok"]

    @property
    def profiles_root(self) -> Path:
        return Path(self.config.get("config", {}).get("profiles_root", "profiles"))

    def path(self, row: StageResult, key: str) -> Path | None:
        """A profile file of a stage: as recorded, relative to the cwd, to the reports root's parent,
        or under the run's profiles root (a study run from another directory)."""
        raw = row.profiles.get(key)
        if not raw:
            return None
        p = Path(raw)
        cands = [p] if p.is_absolute() else [Path.cwd() / p, self.dir.parent.parent / p]
        root = self.profiles_root / self.name / row.name / p.name
        cands += [root, self.dir.parent.parent / root]
        return next((c for c in cands if c.exists()), None)

    def _json(self, row: StageResult, key: str) -> dict | None:
        ck = (row.name, key)
        if ck not in self._cache:
            p = self.path(row, key)
            try:
                self._cache[ck] = json.loads(p.read_text()) if p else None
            except (OSError, json.JSONDecodeError):
                self._cache[ck] = None
        return self._cache[ck]

    def trace_summary(self, row: StageResult) -> dict | None:
        ck = (row.name, "trace_summary+trace")
        if ck not in self._cache:
            s = self._json(row, "trace_summary")
            trace = self.path(row, "torch_trace")
            if s is None and trace is not None:  # summary missing: read the trace itself
                from study.profiling.trace_summary import summarize

                try:
                    s = summarize(trace)
                except (OSError, ValueError, json.JSONDecodeError):
                    s = None
            self._cache[ck] = s
        return self._cache[ck]

    def cprofile(self, row: StageResult) -> dict | None:
        return self._json(row, "cprofile_json")

    def lines(self, row: StageResult) -> dict | None:
        return self._json(row, "lines_json")

    def losses(self, row: StageResult) -> list[float]:
        """Training loss per step from the stage's seed records (per-batch rows, value1), repeat 0."""
        p = self.dir / "stages" / row.name / "records-r0.csv"
        if not p.exists():
            return []
        out = []
        with open(p, newline="") as fh:
            for rec in csv.DictReader(fh):
                if rec.get("type") == str(TYPE_BATCH):
                    try:
                        out.append(float(rec["value1"]))
                    except (KeyError, ValueError):
                        pass
        return out

    def worker_sweep(self) -> list[dict]:
        """The workers=auto sweep, one row per worker count, the chosen one marked `chosen`.

        reports/<run>/worker_sweep.json as the toggle writes it ({"table": [...], "chosen": n, ...});
        without it, the table a stage recorded in its notes (results.jsonl alone carries it)."""
        try:
            saved = json.loads((self.dir / "worker_sweep.json").read_text())
        except (OSError, json.JSONDecodeError):
            saved = None
        chosen = saved.get("chosen") if isinstance(saved, dict) else None
        rows = saved.get("table") if isinstance(saved, dict) else saved
        if not isinstance(rows, list):
            rows = next((r.notes["worker_sweep"] for r in self.stages
                         if isinstance(r.notes.get("worker_sweep"), list)), [])
            chosen = next((r.notes.get("worker_sweep_chosen") for r in self.stages
                           if r.notes.get("worker_sweep_chosen") is not None), None)
        rows = [r for r in rows if isinstance(r, dict) and "workers" in r and "samples_per_s" in r]
        return [{**r, "chosen": chosen is not None and r["workers"] == chosen} for r in rows]

    def pictures(self) -> dict:
        """reports/<run>/pictures.json: what the last ok stage's model predicts (or why it could not)."""
        from study.pictures import PICTURES_FILE

        try:
            data = json.loads((self.dir / PICTURES_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}
