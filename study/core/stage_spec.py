"""What the parent (planner) and the child (stage worker) share.

Everything that crosses the process boundary lives here: the stage spec (a typed
object holding the stage's RunConfig), the progress protocol, the environment a child starts with,
and the identity fields every result row carries, built in one place.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.core.config import RunConfig
from study.core.machine_load import STUDY_PID_ENV
from study.core.stage_plan import Plan
from study.core.records import write_atomic

REPO_ROOT = Path(__file__).resolve().parent.parent

# The parent sets this to a file path; the timing pass writes "done total" there after each step,
# outside the timed phases. A file (not a pipe) so the child never blocks on a slow reader.
PROGRESS_ENV = "STUDY_PROGRESS_FILE"


@dataclass(frozen=True)
class StageSpec:
    """One stage of the ladder: its place, its toggles (ladder order), the user's RunConfig and the
    plan its toggles wrote (loader and launch settings)."""

    index: int
    name: str
    stack: tuple[str, ...]
    config: RunConfig
    plan: Plan = field(default_factory=Plan)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "stack": list(self.stack), "config": self.config.to_dict(),
                "plan": self.plan.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StageSpec":
        return cls(index=int(d["index"]), name=str(d["name"]), stack=tuple(d["stack"]),
                   config=RunConfig.from_dict(d["config"]), plan=Plan.from_dict(d.get("plan") or {}))

    def hash(self) -> str:
        """What the stage measures: the measured options and the plan (not the sweep's own figures)."""
        return hashlib.sha256(f"{self.config.hash()}|{self.plan.hash()}".encode()).hexdigest()[:12]

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> "StageSpec":
        return cls.from_dict(json.loads(Path(path).read_text()))

    @property
    def profile_dir(self) -> Path:
        """profiles/<run>/<stage>/: the stage's TensorBoard logdir and profiler output."""
        return self.config.profile_dir / self.name

    @property
    def report_dir(self) -> Path:
        """reports/<run>/stages/<stage>/: the stage's logs, pass outputs and seed records."""
        return self.config.report_dir / "stages" / self.name

    @property
    def checkpoint_path(self) -> Path:
        return self.config.report_dir / "checkpoints" / f"{self.name}.pt"

    def identity(self) -> dict[str, Any]:
        """The fields that say which stage a result row belongs to (ok, skipped or failed alike)."""
        cfg = self.config
        return dict(run=cfg.run_name, stage=self.index, name=self.name, stack=list(self.stack), task=cfg.task,
                    model=cfg.model, dataset=cfg.dataset, world_size=self.plan.world_size,
                    batch_size=self.plan.per_process_batch(cfg.batch_size),
                    config_hash=self.hash())


def write_progress(path: str | Path, done: int, total: int, loss: float = math.nan,
                   samples_per_s: float = math.nan) -> None:
    """Steps done of total, and the last step's loss and speed (the parent draws them live)."""
    write_atomic(Path(path), f"{done} {total} {loss!r} {samples_per_s!r}")


def read_progress(path: Path) -> tuple[int, int, float, float] | None:
    """(done, total, last loss, last samples/s), or None when there is no progress file yet or it was
    caught mid-rename; the two figures are NaN when a writer did not give them."""
    try:
        fields = path.read_text().split()
        done, total = int(fields[0]), int(fields[1])
        loss, speed = (float(v) for v in (fields[2:4] if len(fields) >= 4 else ("nan", "nan")))
    except (OSError, ValueError, IndexError):
        return None
    return done, total, loss, speed


def child_env(progress_file: Path | None = None) -> dict[str, str]:
    """Environment of a child process: this checkout importable from any working directory."""
    env = dict(os.environ)
    env.setdefault(STUDY_PID_ENV, str(os.getpid()))  # the study itself: its descendants' load is its own
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if progress_file is not None:
        env[PROGRESS_ENV] = str(progress_file)
    return env


def worker_command(spec: StageSpec, stage_file: Path, pass_name: str, repeat: int, out: Path) -> list[str]:
    """The command that runs one pass of a stage: `python -m study.stage`, through torchrun for DDP."""
    cfg, plan = spec.config, spec.plan
    args = ["-m", "study.stage", "--stage", str(stage_file), "--pass", pass_name,
            "--repeat", str(repeat), "--out", str(out)]
    if plan.launcher != "torchrun":
        return [sys.executable, *args]
    launch = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={plan.world_size}",
              f"--nnodes={cfg.nnodes}"]
    if cfg.nnodes > 1:
        # torchrun's static rendezvous: node 0's ranks are 0..N-1, so the leader's rank 0 writes the
        # stage's result; each pass gets its own id, so a node late for one pass cannot join the next.
        launch += ["--rdzv-backend=static", f"--rdzv-endpoint={cfg.rdzv_endpoint}", f"--node-rank={cfg.node_rank}",
                   f"--rdzv-id={spec.name}-{pass_name}-{repeat}", f"--rdzv-conf=timeout={int(cfg.rdzv_timeout)}"]
    else:
        launch += ["--standalone"]
    return launch + args
