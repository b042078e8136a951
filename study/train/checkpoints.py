"""Checkpoints: what training needs to go on (weights, optimizer and scaler state, position), written
atomically, and what a finished stage keeps (its weights, step and metadata)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from study.train.loop import TrainState


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Written to a temp file, then renamed, so a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException as e:  # a full disk, a kill: never leave the half-written temp file behind
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) or "write" in str(e).lower():
            raise OSError(getattr(e, "errno", None), f"cannot write the checkpoint {path}: {e}") from e
        raise


def save_checkpoint(path: Path, s: TrainState) -> None:
    """Everything training needs to go on (atomic): weights, optimizer and scaler state, position."""
    save_atomic({
        "model": s.base_model.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "scaler": s.scaler.state_dict() if s.scaler.is_enabled() else None,
        "step": s.step,
        "epoch": s.epoch,
        "steps_in_epoch": s.steps_in_epoch,
        "meta": s.meta,
    }, path)


# What a finished stage keeps: the pictures pass and `study predict` read the weights, the step count
# and the metadata; the optimizer state (SGD momentum, as large as the weights) only served to resume.
WEIGHTS_KEYS = ("model", "step", "epoch", "meta")


def keep_weights_only(path: Path) -> None:
    """Rewrite the checkpoint at `path` as its weights, step and metadata (atomic)."""
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # the momentum is never read
    save_atomic({k: state[k] for k in WEIGHTS_KEYS if k in state}, path)


def load_checkpoint(path: Path, s: TrainState) -> bool:
    """Resume `s` from `path`; False, leaving `s` as it is, when the file holds no optimizer state (a
    finished stage's kept weights: nothing to resume) or was written by another stage configuration
    (its stage hash differs: the same stage name with another stack or setting)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("optimizer") is None:
        return False
    saved_hash = (state.get("meta") or {}).get("stage_hash")
    if saved_hash and saved_hash != s.meta.get("stage_hash"):
        return False
    s.base_model.load_state_dict(state["model"])
    s.optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler") and s.scaler.is_enabled():
        s.scaler.load_state_dict(state["scaler"])
    s.step, s.epoch, s.steps_in_epoch = state["step"], state["epoch"], state["steps_in_epoch"]
    s.first_step = s.step
    return True
