"""Faults injected into study processes, for the fault tests only: this folder is put on PYTHONPATH
by a test, so every process of that study (stage processes, torchrun ranks, loader workers) imports
this file at start-up. Nothing happens unless STUDY_TEST_FAULTS names faults, as
"STAGE=FAULT,STAGE=FAULT" with STAGE a stage name (00-base, 01-channels_last, ...) and FAULT one of:

  oom                 the second training step allocates 64 TiB: the allocator's real failure
  segv                the second training step kills its process with SIGSEGV
  rank1-raise         rank 1 raises at its second training step (DDP stages)
  kill-loader-worker  a DataLoader worker kills itself with SIGKILL at its third sample
  slow                every training step sleeps 0.2 s (to catch a stage mid-run)
  blank-inputs        the training set's transform multiplies every image by 0 (trains, learns nothing;
                      the sanity check must say so)

The faults wrap what study.stage.session.build_session returns, as soon as that module is imported; the
study's code is untouched.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import signal
import sys
import time

FAULTS = dict(item.split("=", 1) for item in os.environ.get("STUDY_TEST_FAULTS", "").split(",") if "=" in item)


class FaultyModel:
    """The stage's (wrapped) model, with a fault at its second call; everything else passes through."""

    def __init__(self, inner, fault: str) -> None:
        self.inner, self.fault, self.calls = inner, fault, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.fault == "slow":
            time.sleep(0.2)
        elif self.calls == 2:
            if self.fault == "oom":
                import torch

                torch.empty(1 << 46, dtype=torch.uint8)
            elif self.fault == "segv":
                os.kill(os.getpid(), signal.SIGSEGV)
            elif self.fault == "rank1-raise" and os.environ.get("RANK") == "1":
                raise RuntimeError("injected failure on rank 1")
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def kill_in_loader_worker(dataset) -> None:
    """Give the dataset object a class whose __getitem__ kills a loader worker at its third sample."""
    base = type(dataset)
    calls = [0]

    def getitem(self, index):
        from torch.utils.data import get_worker_info

        if get_worker_info() is not None:
            calls[0] += 1
            if calls[0] == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        return base.__getitem__(self, index)

    def getitems(self, indices):  # the batched fetch DataLoader prefers (Subset has one)
        return [getitem(self, i) for i in indices]

    dataset.__class__ = type(f"Faulty{base.__name__}", (base,), {"__getitem__": getitem, "__getitems__": getitems})


def patch(module) -> None:
    build = module.build_session

    def build_session(spec, *args, **kwargs):
        sess = build(spec, *args, **kwargs)
        fault = FAULTS.get(spec.name, "")
        if fault == "kill-loader-worker":
            kill_in_loader_worker(sess.train_loader.dataset)
        elif fault == "blank-inputs":
            data = getattr(sess.bundle.train, "dataset", sess.bundle.train)  # under the --subset
            inner = data.transform
            data.transform = lambda image: inner(image) * 0
        elif fault:
            sess.state.model = FaultyModel(sess.state.model, fault)
        return sess

    module.build_session = build_session


class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "study.stage.session":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


if FAULTS:
    sys.meta_path.insert(0, Finder())
