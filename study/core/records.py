"""Records: StageResult rows of results.jsonl and how they are read, and the seed CSV record format.

Every table, plot and CSV of a run is built from reports/<run>/results.jsonl alone; one writer
appends to it (study.core.recorder).
"""
from __future__ import annotations

import csv
import io
import json
import os
import statistics
import subprocess
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from study.core.stats import log_ci

# Version of the row format: 2 adds "run" rows (the machine and the options), "verdict" rows (each
# stage's findings and advice as decided when the run ended) and this field; rows without it are 1.
SCHEMA_VERSION = 2

SEED_COLUMNS = ("type", "epoch", "start", "loading", "duration", "value1", "value2")
# Seed record types
TYPE_TRAIN, TYPE_VAL, TYPE_BATCH, TYPE_DOWNLOAD_TRAIN, TYPE_DOWNLOAD_VAL = 0, 1, 2, 10, 11


@dataclass
class StageResult:
    """One flat record per stage (kind="stage") and per timed repeat (kind="repeat")."""

    run: str
    stage: int
    name: str
    # "repeat" rows are the raw timed runs; "stage" rows aggregate them; --stack auto adds "search-repeat"
    # (one run of the search), "search" (a round's table row) and "search-result" (study/search/); the
    # sanity check before the ladder adds "sanity" (study/core/sanity.py)
    kind: str = "stage"
    stack: list[str] = field(default_factory=list)  # toggles in effect (specs, ladder order)
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""  # why skipped
    error: str = ""  # the real error of a failed stage (last lines)
    repeat: int = -1  # repeat index for kind="repeat"; -1 for the aggregate
    repeats: int = 1
    task: str = ""
    model: str = ""
    dataset: str = ""
    device: str = ""
    device_name: str = ""
    world_size: int = 1
    nodes: int = 1  # machines the stage's processes ran on (world_size counts them all)
    threads: int = 0  # torch intra-op threads per process (DDP/hogwild split the cores)
    batch_size: int = 0  # per process
    steps_measured: int = 0
    throughput: float = 0.0  # samples/s, all processes together
    throughput_ci_low: float = 0.0
    throughput_ci_high: float = 0.0
    step_time_p50: float = 0.0  # seconds
    step_time_p90: float = 0.0
    step_time_ci_low: float = 0.0
    step_time_ci_high: float = 0.0
    step_time_cv: float = 0.0  # standard deviation / mean of the measured step times (median over repeats)
    ci_basis: str = ""  # "repeats" (t-interval over repeats) or "steps" (over steps of one run)
    t_data: float = 0.0  # mean seconds per step in each phase
    t_h2d: float = 0.0
    t_forward: float = 0.0
    t_backward: float = 0.0
    t_optimizer: float = 0.0
    data_wait_share: float = 0.0
    setup_seconds: float = 0.0  # model build + wrapping (script/compile) before the first step
    warmup_seconds: float = 0.0  # the excluded warm-up steps (first-call compile shows up here)
    peak_memory_mb: float = 0.0
    memory_kind: str = ""  # "cuda_max_allocated" or "host_max_rss"
    memory_capacity_mb: float = 0.0  # what peak_memory_mb is measured against: the GPU's memory, or host RAM
    flops_per_sample: float = 0.0
    mfu: float = 0.0
    peak_flops: float = 0.0
    peak_flops_source: str = ""
    metric_name: str = ""
    metric: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    final_loss: float = 0.0
    first_loss: float = 0.0
    # The first training step whose loss was NaN or infinite (-1: none). Such a stage's speed is kept
    # but never a gain: the verdict and the search pass it over.
    diverged_step: int = -1  # the first training step's loss (0: not recorded, rows before it existed)
    steps_total: int = 0
    epochs: int = 0
    # Share of all CPU time that processes outside the study used while the pass ran (0-1; -1: not
    # measured, rows before it existed). A stage row carries the highest of the runs it kept.
    foreign_cpu_share: float = -1.0
    # With --until: seconds from the first training step to the validation that reached the target,
    # and the steps it took; -1: not reached within the caps, or no target asked.
    time_to_target_s: float = -1.0
    steps_to_target: int = -1
    # Whether the measured steps showed no trend (the second half's median step within noise of the
    # first's); None: too few steps to tell, or rows before it existed.
    steady: bool | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, str] = field(default_factory=dict)
    config_hash: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    git_sha: str = ""
    started: float = 0.0
    finished: float = 0.0
    schema: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StageResult":
        names = {f.name for f in fields(cls)}
        return cls(**({"schema": 1} | {k: v for k, v in d.items() if k in names}))


def read_results(path: Path, skipped: list[str] | None = None) -> list[StageResult]:
    """Rows of a results.jsonl. A line that is no row (torn by a kill, `null`, garbage, not an object)
    is left out; `skipped`, when given, collects "line N: why" for each, so a report can say so."""
    rows: list[StageResult] = []
    if not path.exists():
        return rows
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            raw = json.loads(line)
            if not isinstance(raw, dict):
                raise TypeError(f"a JSON {type(raw).__name__}, not an object")
            rows.append(StageResult.from_dict(raw))
        except (json.JSONDecodeError, TypeError, ValueError) as e:
            if skipped is not None:
                skipped.append(f"line {n}: {type(e).__name__}: {str(e)[:80]}")
    return rows


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException as e:  # disk full, Ctrl-C: no half-written temp file left beside the real one
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename != str(path):
            raise OSError(e.errno, e.strerror, str(path)) from e  # the file meant, not the temp file
        raise


# --- seed CSV ---------------------------------------------------------------------------------

def seed_rows_to_csv(rows: Iterable[tuple], extra_header: tuple[str, ...] = ()) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(SEED_COLUMNS + extra_header)
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def load_seed_rows(loads: Iterable[Any]) -> list[tuple]:
    """Seed records 10/11: time to fetch/open the train/validation split, value1 = items."""
    return [(TYPE_DOWNLOAD_TRAIN if ld.split == "train" else TYPE_DOWNLOAD_VAL, 0, f"{ld.start:.6f}",
             f"{ld.seconds:.6f}", f"{ld.seconds:.6f}", ld.count, "") for ld in loads]


def aggregate(repeats: list[StageResult]) -> StageResult:
    """The stage row: medians over repeats, 95% CI over repeats (or over steps when R = 1)."""
    ok = [r for r in repeats if r.status == "ok"]
    base = ok[0] if ok else repeats[0]
    agg = StageResult.from_dict(asdict(base))
    agg.kind, agg.repeat, agg.repeats = "stage", -1, len(repeats)
    if not ok:
        return agg
    if len(ok) >= 2:
        tps = [r.throughput for r in ok]
        sts = [r.step_time_p50 for r in ok]
        # on the log: an interval of a rate or a time over two or three runs never reaches below zero
        _, lo, hi = log_ci(tps)
        _, slo, shi = log_ci(sts)
        agg.throughput = statistics.median(tps)
        agg.step_time_p50 = statistics.median(sts)
        agg.step_time_p90 = statistics.median([r.step_time_p90 for r in ok])
        agg.throughput_ci_low, agg.throughput_ci_high = lo, hi
        agg.step_time_ci_low, agg.step_time_ci_high = slo, shi
        agg.ci_basis = "repeats"
        for f in ("t_data", "t_h2d", "t_forward", "t_backward", "t_optimizer", "data_wait_share",
                  "setup_seconds", "warmup_seconds", "mfu", "step_time_cv"):
            setattr(agg, f, statistics.median([getattr(r, f) for r in ok]))
        agg.peak_memory_mb = max(r.peak_memory_mb for r in ok)
    # each run's figure in round order: run r of one stage pairs with run r of another (the ladder's rounds)
    agg.notes = {**agg.notes, "repeat_samples_per_s": [r.throughput for r in ok]}
    agg.foreign_cpu_share = max(r.foreign_cpu_share for r in ok)
    # a stage reached its target only if every repeat did; its time is their median
    times = [r.time_to_target_s for r in ok]
    agg.time_to_target_s = statistics.median(times) if min(times) >= 0 else -1.0
    agg.steps_to_target = int(statistics.median([r.steps_to_target for r in ok])) if min(times) >= 0 else -1
    steadiness = [r.steady for r in ok if r.steady is not None]
    agg.steady = all(steadiness) if steadiness else None
    # metric: the first repeat's (all repeats train the same seed; keep one consistent figure)
    return agg


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        sha = out.stdout.strip()
        if sha:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5,
                                   cwd=Path(__file__).resolve().parent).stdout.strip()
            return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return ""


def versions() -> dict[str, str]:
    import platform

    import torch
    import torchvision

    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda or "",
        "python": platform.python_version(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
        "cpu": platform.processor() or platform.machine(),
    }
