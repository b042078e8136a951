"""A sample that cannot be read says which one and which file, wherever it is read.

Readers raise whatever their decoder raises ("image file is truncated (5 bytes not processed)"),
which names no file; in a DataLoader worker it is also wrapped in the worker's traceback. Each
reader's dataset re-raises it as a SampleError naming the index and the file(s), so the parent's
preflight can say what to fix, and a stage that meets it mid-run records where.
"""
from __future__ import annotations

from typing import Iterable


class SampleError(ValueError):
    """Sample ``index`` of a dataset could not be read (one-argument, so DataLoader can re-raise it)."""


def unreadable(index: int, files: Iterable[object], e: BaseException) -> SampleError:
    names = ", ".join(str(f) for f in files)
    first = " ".join(str(e).split()) or "no message"
    return SampleError(f"sample {index} ({names}) cannot be read: {type(e).__name__}: {first}")
