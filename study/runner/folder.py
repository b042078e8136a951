"""One run folder, one study: who writes reports/<run>/ (a lock), and what it measured (its identity).

A run folder holds the rows of one study. Its identity is the hash of every measured option but the
stack (stages of one identity compare with each other; the stack only says which stages there are):
- ``--resume`` into a folder of another identity is refused before any stage starts, with what
  differs: resuming would mix stages measured under two settings in one ladder;
- a plain rerun into a used folder moves the earlier study's files to ``previous/<N>/`` first
  (nothing finished is lost, and the report never mixes them in); its checkpoints go, since the
  rerun trains every stage afresh and they are the only large files.
Torch-free.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

from study.core.config import ConfigError, RunConfig

PREVIOUS = "previous"  # reports/<run>/previous/<N>/: earlier studies under this run name
LOCK = ".lock"
KEPT = (PREVIOUS, LOCK)  # what a rerun leaves where it is


class RunFolderLock:
    """One study writes a run folder at a time: an exclusive flock on reports/<run>/.lock, taken once the
    preflight passed (a refused run leaves nothing behind) and held until the study ends. The kernel
    drops it when the holder dies, however it dies, so a stale lock cannot outlive its process."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK
        self.fd: int | None = None
        self.made: list[Path] = []  # folders this lock created, innermost first

    def acquire(self) -> None:
        import fcntl

        folder = self.path.parent
        while not folder.exists():
            self.made.append(folder)
            folder = folder.parent
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(f"another study (process {holder}) is writing {self.path.parent}; wait for it to end, "
                              f"or give this one another --run-name") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self, refused: bool = False) -> None:
        """Let go; a `refused` study (bad input found after the lock was taken) also takes back the lock
        file and the folders it made, so it leaves nothing behind."""
        if self.fd is None:
            return
        if refused:
            self.path.unlink(missing_ok=True)
            for folder in self.made:
                try:
                    folder.rmdir()  # only if empty: what another writer put there stays
                except OSError:
                    break
        os.close(self.fd)  # closing the descriptor releases the flock
        self.fd = None


def identity_options(config: dict[str, Any]) -> dict[str, Any]:
    """The measured options of a config (as RunConfig.to_dict writes it), the stack left out."""
    measured = {f.name for f in fields(RunConfig) if f.metadata.get("measured", True)} - {"stack"}
    return {k: v for k, v in config.items() if k in measured}


def recorded_config(run_dir: Path) -> dict[str, Any] | None:
    """The options the folder's last study ran with: its last "run" row, else its config.json."""
    from study.core.records import read_results

    rows = read_results(run_dir / "results.jsonl")
    for r in reversed(rows):
        if r.kind == "run" and isinstance(r.notes.get("config"), dict):
            return r.notes["config"]
    try:
        saved = json.loads((run_dir / "config.json").read_text()).get("config")
    except (OSError, ValueError, AttributeError):
        return None
    return saved if isinstance(saved, dict) else None


def differences(old: dict[str, Any], new: dict[str, Any], limit: int = 3) -> list[str]:
    def show(v: Any) -> str:
        return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)

    keys = sorted(k for k in old.keys() | new.keys() if show(old.get(k, "")) != show(new.get(k, "")))
    return [f"{k} {show(old.get(k, '(unset)'))} → {show(new.get(k, '(unset)'))}" for k in keys[:limit]] + \
        ([f"{len(keys) - limit} more"] if len(keys) > limit else [])


def check_resume_identity(cfg: RunConfig) -> None:
    """--resume continues the folder's study only if it measures what that study measured."""
    if not cfg.resume:
        return
    old = recorded_config(cfg.report_dir)
    if old is None:
        return
    # through RunConfig, so both sides are spelled alike (tuples, defaults of newer options)
    new = identity_options(cfg.to_dict())
    try:
        old = identity_options(RunConfig.from_dict({**old, "run_name": cfg.run_name}).to_dict())
    except (ConfigError, TypeError, ValueError):
        old = identity_options(old)
    changed = differences(old, new)
    if changed:
        raise ConfigError(f"--resume: {cfg.report_dir} was measured with other settings ({'; '.join(changed)}), so its "
                          f"stages cannot share a ladder with this study's; rerun without --resume to start afresh "
                          f"(the earlier study moves to {cfg.report_dir / PREVIOUS}/), or use another --run-name")


def archive_previous(cfg: RunConfig) -> Path | None:
    """A rerun without --resume into a used folder: the earlier study's files to previous/<N>/ (its
    checkpoints deleted). Returns where they went, or None when the folder held no study."""
    run_dir = cfg.report_dir
    if cfg.resume or not (run_dir / "results.jsonl").exists():
        return None
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    base = run_dir / PREVIOUS
    n = 1 + max((int(p.name) for p in base.iterdir() if p.name.isdigit()), default=0) if base.is_dir() else 1
    target = base / str(n)
    target.mkdir(parents=True)
    for entry in sorted(run_dir.iterdir()):
        if entry.name not in KEPT:
            os.replace(entry, target / entry.name)
    return target
