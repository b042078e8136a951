"""What a run leaves on disk: checkpoints pruned as the ladder goes on, the sizes the console and the
report state, and `study clean RUN`, which removes what is left of the bulk.

A stage's checkpoint (reports/<run>/checkpoints/<stage>.pt) has two readers. While the stage trains,
--resume goes on from it: weights and optimizer state. Once the stage is trained, its last timing
repeat rewrites it as weights and metadata only (study.train.checkpoints.keep_weights_only), which is all the
pictures pass and `study predict` read. Between stages the parent keeps those weights for one stage,
the last ladder stage that finished ok (the one the pictures draw), and deletes the other finished
stages' files. A failed stage keeps its checkpoint: --resume trains it again from there.
--keep-checkpoints keeps every full checkpoint. Torch-free: the parent runs it.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from study.core.config import ConfigError
from study.core.records import StageResult, read_results
from study.core.stage_spec import StageSpec

CHECKPOINTS = "checkpoints"


def tree_size(path: Path) -> int:
    """Bytes of the files under `path` (or of the file itself); links are not followed."""
    if not path.exists():
        return 0
    if not path.is_dir():
        return path.lstat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # removed while we counted
                pass
    return total


def human(nbytes: int) -> str:
    """Binary units, as `du -h` counts them."""
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# --- pruning, between stages ------------------------------------------------------------------

def weights_stage(specs: Sequence[StageSpec], ladder_size: int, results: Iterable[StageResult]) -> StageSpec | None:
    """The stage whose weights the run keeps: the last ladder stage (no ablation) that finished ok
    with a checkpoint on disk. The pictures pass draws its model."""
    ok = {r.name for r in results if r.status == "ok"}
    return next((s for s in reversed(specs)
                 if s.index <= ladder_size and s.name in ok and s.checkpoint_path.is_file()), None)


def prune_checkpoints(specs: Sequence[StageSpec], ladder_size: int, results: Sequence[StageResult]) -> list[Path]:
    """Delete the checkpoints of the stages that finished ok, except the weights the run keeps, and
    the temp files of saves a kill cut short. Only between stages: no stage process writes then."""
    keep = weights_stage(specs, ladder_size, results)
    ok = {r.name for r in results if r.status == "ok"}
    gone = [s.checkpoint_path for s in specs if s.name in ok and s is not keep and s.checkpoint_path.is_file()]
    if specs:
        gone += sorted(specs[0].checkpoint_path.parent.glob("*.tmp[0-9]*"))  # study.train.checkpoints' temp names
    for path in gone:
        path.unlink(missing_ok=True)
    return gone


# --- what the run holds ----------------------------------------------------------------------

def checkpoint_folders(report_dir: Path) -> list[Path]:
    """The run's checkpoints folders: the ladder's, and the search's if it left one."""
    if not report_dir.is_dir():
        return []
    return sorted(d for d in report_dir.rglob(CHECKPOINTS) if d.is_dir() and not d.is_symlink())


def checkpoint_files(report_dir: Path) -> list[Path]:
    return sorted({p for d in checkpoint_folders(report_dir) for p in d.rglob("*") if p.is_file()})


def profile_dir_of(report_dir: Path) -> Path:
    """profiles/<run>/ of a run, from its config.json, relative to the cwd or to the reports root's parent."""
    try:
        root = Path(json.loads((report_dir / "config.json").read_text())["config"]["profiles_root"])
    except (OSError, ValueError, KeyError, TypeError):
        root = Path("profiles")
    cands = [root / report_dir.name] if root.is_absolute() else [root / report_dir.name,
                                                                  report_dir.parent.parent / root / report_dir.name]
    return next((c for c in cands if c.is_dir()), cands[0])


@dataclass
class Usage:
    report_dir: Path
    profile_dir: Path
    checkpoints: list[tuple[Path, int]]
    reports: int  # everything under reports/<run>/ but the checkpoints
    traces: int   # profiles/<run>/

    @property
    def checkpoint_bytes(self) -> int:
        return sum(n for _, n in self.checkpoints)

    @property
    def total(self) -> int:
        return self.checkpoint_bytes + self.reports + self.traces


def usage(report_dir: Path, profile_dir: Path | None = None) -> Usage:
    files = [(p, tree_size(p)) for p in checkpoint_files(report_dir)]
    prof = profile_dir if profile_dir is not None else profile_dir_of(report_dir)
    return Usage(report_dir, prof, files, tree_size(report_dir) - sum(n for _, n in files), tree_size(prof))


def clean_command(report_dir: Path) -> str:
    """How the user removes this run's checkpoints."""
    arg = report_dir.name if report_dir.parent == Path("reports") else str(report_dir)
    return f"python -m study clean {arg}"


def disk_line(report_dir: Path, profile_dir: Path | None = None) -> str:
    """The console's last word on a run: how much it left, and where."""
    u = usage(report_dir, profile_dir)
    head = f"left on disk: {human(u.total)}: {report_dir}/ {human(u.reports + u.checkpoint_bytes)}"
    traces = f"{u.profile_dir}/ {human(u.traces)} (traces)"
    if not u.checkpoints:
        return f"{head} (no checkpoints), {traces}"
    names = ", ".join(p.name for p, _ in u.checkpoints[:3]) + (", ..." if len(u.checkpoints) > 3 else "")
    return (f"{head}, of which checkpoints {human(u.checkpoint_bytes)} ({names}); {traces}. "
            f"`{clean_command(report_dir)}` removes the checkpoints")


# --- study clean ------------------------------------------------------------------------------

def run_dir(name: str, reports_root: str = "reports") -> Path:
    """reports/<name>/, or `name` itself when it is the path of a run; ConfigError for anything else."""
    for d in (Path(name), Path(reports_root) / name):
        if d.is_dir() and ((d / "results.jsonl").is_file() or (d / "config.json").is_file()):
            return d
    raise ConfigError(f"no study run {name!r}: no results.jsonl or config.json in {Path(reports_root) / name}; "
                      f"give a run name under --reports-root or the path to reports/<run>")


def clean(report_dir: Path) -> str:
    """Remove the run's checkpoints and keep results.jsonl, the reports and the traces; returns what it did."""
    u = usage(report_dir)
    kept = f"kept results and reports in {report_dir}/ ({human(u.reports)}) and traces in {u.profile_dir}/ ({human(u.traces)})"
    if not u.checkpoints:
        return f"nothing to remove: {report_dir}/ holds no checkpoints; {kept}"
    finished = {r.name for r in read_results(report_dir / "results.jsonl") if r.kind == "stage" and r.status == "ok"}
    unfinished = sorted(p.stem for p, _ in u.checkpoints if p.suffix == ".pt" and p.stem not in finished
                        and p.parent == report_dir / CHECKPOINTS)
    for folder in reversed(checkpoint_folders(report_dir)):  # the deepest first
        shutil.rmtree(folder, ignore_errors=True)
    note = f"; --resume trains {', '.join(unfinished)} from the start" if unfinished else ""
    return f"removed {len(u.checkpoints)} checkpoint file(s), {human(u.checkpoint_bytes)}; {kept}{note}"
