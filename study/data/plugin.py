"""A user's dataset: `--dataset FILE.py:FUNC` or `package.module:FUNC`.

FUNC takes the RunConfig (or nothing) and returns ``(train, val)`` or ``(train, val, classes)``:
map-style datasets (``len`` and ``[i]``) whose items are ``(input, target)``. It is called once in
every process that opens the data (the parent's preflight, each stage, each pass), so it should be
cheap to call again or cache its work on disk.

The number of classes (what the model's head and the task are built for) is, first found first:
the ``classes`` it returns (their count); an attribute ``num_classes`` of the train dataset; every
label of a ``targets`` attribute (max + 1); else the largest integer target over NUM_CLASS_SCAN items
spread over each split, plus one (0 when the targets are not integers). A scan can miss a rare class:
return the classes, or give the dataset a ``num_classes``, when the count matters.
"""
from __future__ import annotations

import inspect
import time
from typing import Any

from study.core.config import ConfigError, RunConfig
from study.data.bundle import DataBundle, LoadRecord, all_targets, sample_indices, take_subset

NUM_CLASS_SCAN = 64  # items per split read to count the classes when nothing else says
IGNORE_INDEX = 255  # segmentation's ignored label (study.train.tasks), never a class


def _call(fn: Any, cfg: RunConfig, ref: str) -> Any:
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    except (TypeError, ValueError):
        params = []
    try:
        return fn(cfg) if params else fn()
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 — whatever the user's function raises is bad input here
        text = " ".join(str(e).split())[:200]
        raise ConfigError(f"--dataset {ref}: calling it raised {type(e).__name__}" + (f": {text}" if text else "")) \
            from None


def _map_style(ds: Any) -> bool:
    return hasattr(ds, "__getitem__") and hasattr(ds, "__len__")


def _count_classes(train: Any, val: Any, task: str, ref: str) -> int:

    given = getattr(train, "num_classes", None)
    if isinstance(given, int) and not isinstance(given, bool) and given > 0:
        return given
    labels = all_targets(train)
    if labels:
        return int(max(int(v) for v in labels)) + 1
    import torch

    top = -1
    for split, ds in (("train", train), ("val", val)):
        for i in sample_indices(len(ds), NUM_CLASS_SCAN):
            try:
                item = ds[i]
            except Exception as e:  # noqa: BLE001
                raise ConfigError(f"--dataset {ref}: reading {split} item {i} raised {type(e).__name__}: "
                                  f"{' '.join(str(e).split())[:200]}") from None
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                return 0  # the preflight names what is wrong with the item
            y = item[1]
            if isinstance(y, int) and not isinstance(y, bool):
                top = max(top, y)
            elif isinstance(y, torch.Tensor) and y.numel() and not y.is_floating_point():
                values = y[y != IGNORE_INDEX] if task == "segment" else y
                if values.numel():
                    top = max(top, int(values.max()))
            else:
                return 0  # not integer targets: no classes to count
    return top + 1


def open_plugin(cfg: RunConfig) -> DataBundle:
    """The DataBundle of the user's dataset function `cfg.dataset`; ConfigError (one line naming it)
    when it is missing, raises, or returns something other than (train, val[, classes])."""
    from study.core.references import resolve

    ref = cfg.dataset
    fn = resolve(ref)
    if not callable(fn):
        raise ConfigError(f"--dataset {ref}: it names {type(fn).__name__} {fn!r:.40}, not a function returning (train, val)")
    start, t0 = time.time(), time.perf_counter()
    out = _call(fn, cfg, ref)
    seconds = time.perf_counter() - t0
    want = "(train, val) or (train, val, classes), the datasets map-style (len and [i]) with (input, target) items"
    if not (isinstance(out, (tuple, list)) and len(out) in (2, 3)):
        raise ConfigError(f"--dataset {ref} returned {type(out).__name__}; it must return {want}")
    train, val = out[0], out[1]
    for split, ds in (("train", train), ("val", val)):
        if not _map_style(ds):
            raise ConfigError(f"--dataset {ref}: its {split} split is a {type(ds).__name__}, not a map-style "
                              f"dataset; it must return {want}")
    classes = [str(c) for c in out[2]] if len(out) == 3 and out[2] is not None else []
    num_classes = len(classes) or _count_classes(train, val, cfg.task, ref)
    # One call builds both splits: its time is the train load (record 10); the val load (11) took no
    # time of its own.
    loads = [LoadRecord("train", start, seconds, len(train)), LoadRecord("val", start + seconds, 0.0, len(val))]
    return DataBundle(train=take_subset(train, cfg.subset, cfg.seed), val=take_subset(val, cfg.val_subset, cfg.seed),
                      num_classes=num_classes, loads=loads, classes=classes)
