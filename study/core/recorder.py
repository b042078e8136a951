"""The recorder: the one writer of a run's results.jsonl. The ladder, the search, the sanity check and
the study's own rows (run, data, verdict) hand it rows; nothing else appends to the file.

Rows are appended as whole lines with one write() on an O_APPEND descriptor, so a killed study never
leaves a half row, and finished stages survive anything that happens later. Torch-free.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from study.core.records import StageResult, read_results

RESULTS_FILE = "results.jsonl"


class Recorder:
    """Owns reports/<run>/results.jsonl: `add` appends a row whole, `rows` reads them back in order."""

    def __init__(self, report_dir: Path | str) -> None:
        self.path = Path(report_dir) / RESULTS_FILE
        self._lock = threading.Lock()  # the search records the runs of several nodes from threads

    def add(self, row: StageResult | dict) -> None:
        with self._lock:
            append_jsonl(self.path, row)

    def rows(self, skipped: list[str] | None = None) -> list[StageResult]:
        return read_results(self.path, skipped)


def append_jsonl(path: Path, row: StageResult | dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = ((row.to_json() if isinstance(row, StageResult) else json.dumps(row, sort_keys=True)) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        drop_torn_tail(fd)
        whole = os.fstat(fd).st_size
        try:
            done = os.write(fd, line)
            while done < len(line):  # a short write (a signal): finish the line, never leave half
                done += os.write(fd, line[done:])
        except OSError as e:  # a full disk: cut what got written, so every line before stays whole
            if whole < os.fstat(fd).st_size:
                os.ftruncate(fd, whole)
            raise OSError(e.errno, e.strerror, str(path)) from e
    finally:
        os.close(fd)


def drop_torn_tail(fd: int) -> None:
    """Cut a last line without its newline: a writer killed inside its one write() can leave one (the
    kernel copies a large write page by page). Only the study process appends to a run's results."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    start = max(size - 65536, 0)
    while True:
        chunk = os.pread(fd, size - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0 or start == 0:
            os.ftruncate(fd, start + cut + 1)
            return
        start = max(start - 65536, 0)
