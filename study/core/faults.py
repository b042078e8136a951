"""What a failed pass says: the real error, where it happened, and what killed a process.

A stage runs unattended; when it breaks, its row in results.jsonl is all the user has. The raw
material is poor: DataLoader re-raises a worker's exception with the whole worker traceback as its
message, a loader worker killed by a signal surfaces in the main process as "Connection reset by
peer", a crashed stage process leaves only an exit status, and torchrun replaces a rank's error with
its own summary. These helpers turn each into one line that names the cause. Torch-free at import:
the parent uses the exit-status half.
"""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from types import TracebackType
from typing import Any

MAX_ERROR = 2000  # characters of an error kept in a result row

# What the user can do about a failure of this kind, keyed by words its message holds.
HINTS = (
    (("out of memory", "can't allocate memory", "cannot allocate memory"),
     "out of memory: lower --batch-size or --image-size, or drop the toggle that added memory"),
)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_status(returncode: int) -> str:
    """'exit code 1', or 'killed by SIGKILL' for a negative Popen return code."""
    if returncode < 0:
        name = signal_name(-returncode)
        why = " (the kernel's out-of-memory killer sends this when memory runs out)" if name == "SIGKILL" else ""
        return f"killed by {name}{why}"
    return f"exit code {returncode}"


def hint_for(text: str) -> str:
    low = text.lower()
    for words, hint in HINTS:
        if any(w in low for w in words):
            return hint
    return ""


def worker_exception(message: str) -> str:
    """A DataLoader worker's exception as DataLoader re-raises it ("Caught X in DataLoader worker process
    N. Original Traceback ... X: msg"): the worker's own last line, and which worker."""
    lines = [ln for ln in message.splitlines() if ln.strip()]
    if len(lines) < 2 or not lines[0].startswith("Caught ") or "DataLoader worker" not in lines[0]:
        return ""
    where = lines[0].split(" in ", 1)[1].rstrip(".")  # "DataLoader worker process 0"
    return f"{lines[-1].strip()} (in {where})"


def dead_loader_workers(tb: TracebackType | None, wait: float = 1.0) -> list[str]:
    """'DataLoader worker (pid N) was killed by SIGKILL' for every loader worker found dead by a signal
    in the frames of ``tb``. A worker killed mid-batch shows in the main process only as a broken pipe
    or a reset connection; its exit status is what names the cause."""
    try:
        from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter
    except ImportError:
        return []
    iters: dict[int, Any] = {}
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, _MultiProcessingDataLoaderIter):
                iters[id(value)] = value
        tb = tb.tb_next
    deadline = time.monotonic() + wait
    found = []
    for it in iters.values():
        for w in getattr(it, "_workers", []):
            try:
                # A worker that just died may not be reapable yet: give the workers a moment, together.
                if w.exitcode is None:
                    w.join(max(deadline - time.monotonic(), 0.0))
                code = w.exitcode
            except (ValueError, AssertionError):  # a closed Process object
                continue
            if code is not None and code < 0:
                found.append(f"DataLoader worker (pid {w.pid}) was {exit_status(code)}")
    return found


def describe_exception(e: BaseException) -> str:
    """One line (at most MAX_ERROR characters) for an exception that ended a pass."""
    text = str(e)
    line = worker_exception(text)
    if not line:
        flat = " ".join(text.split())  # e.g. load_state_dict lists the missing keys on further lines
        line = f"{type(e).__name__}: {flat}" if flat else type(e).__name__
    dead = dead_loader_workers(e.__traceback__)
    if dead:
        line = f"{'; '.join(dead)} ({line})"
    hint = hint_for(line)
    if hint:
        line = f"{line}; {hint}"
    return line[:MAX_ERROR]


# --- ranks ----------------------------------------------------------------------------------------

def rank_error_path(out: Path, rank: int) -> Path:
    """Where rank ``rank`` of a pass writes its error: rank 0 writes the pass's own output file."""
    return out if rank == 0 else out.with_name(f"{out.stem}.rank{rank}{out.suffix}")


def rank_error_files(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{out.stem}.rank*{out.suffix}"))


def rank_errors(out: Path, rank0: dict | None) -> str:
    """The errors every rank of a pass wrote, the first one (the cause; the others usually fail
    because it left) first: 'rank 1: ValueError: ...; then rank 0: RuntimeError: ...'."""
    found = []
    if rank0 and rank0.get("error") and "rank" in rank0:
        found.append(rank0)
    for path in rank_error_files(out):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    found = [p for p in found if p.get("error")]
    if not found:
        return ""
    found.sort(key=lambda p: p.get("time", 0.0))
    if len(found) == 1 and found[0].get("rank", 0) == 0:
        return str(found[0]["error"])[:MAX_ERROR]  # one process, or rank 0 alone: no rank to name
    parts = [f"rank {p.get('rank', '?')}: {p['error']}" for p in found]
    return (parts[0] + ("; then " + "; ".join(parts[1:]) if parts[1:] else ""))[:MAX_ERROR]


def torchrun_root_cause(log: str) -> str:
    """torchrun's 'Root Cause (first observed failure)' block, as 'rank 1 exit code -9 (SIGKILL)'."""
    if "Root Cause" not in log:
        return ""
    block = log.split("Root Cause", 1)[1].splitlines()
    fields: dict[str, str] = {}
    for ln in block[1:]:
        if ln.startswith("====="):
            break
        key, sep, value = ln.partition(":")
        if sep and key.strip() in ("rank", "exitcode", "traceback"):
            fields.setdefault(key.strip(), value.strip())
    if not fields:
        return ""
    text = f"torchrun: rank {fields.get('rank', '?')} failed, exitcode {fields.get('exitcode', '?')}"
    tb = fields.get("traceback", "")
    return text + (f" ({tb})" if tb and not tb.startswith("To enable traceback") else "")


def describe_exit(returncode: int, log: str, lines: int = 5) -> str:
    """A pass that ended without writing its error: its exit status and the last lines of its log."""
    cause = torchrun_root_cause(log)
    tail = " | ".join([ln for ln in log.splitlines() if ln.strip()][-lines:])
    head = exit_status(returncode) + (f"; {cause}" if cause else "")
    return (f"{head}: {tail}" if tail else head)[:MAX_ERROR]


def one_line(error: str, limit: int = 300) -> str:
    """An error as the console shows it: one line, cut at ``limit`` characters. The one shortener of the
    study: every message that must fit a line (a stage's error, a compile reason) goes through it."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_line(text: str, limit: int = 300) -> str:
    """The first non-empty line of a message (its summary: the rest is context), shortened as one_line."""
    return one_line(next((ln for ln in str(text).splitlines() if ln.strip()), ""), limit)
