"""Starting a child process, the one way: its output into a log file, its progress polled from a
small file, its result read from a JSON file, its real error found when it fails, and the kernel's
promise that it dies with the study (even when the study is SIGKILLed). Torch-free.

Stage passes, torchrun launches, the search's runs and the workers=auto sweep all start here.
Hogwild's trainers are the one exception: they are multiprocessing children of a stage process,
because they must share the model's memory with it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

from study.core.faults import describe_exit, rank_error_files, rank_errors
from study.core.machine_load import LoadWatch
from study.core.stage_spec import child_env, read_progress


# How often the parent looks at a child's progress file. The parent is otherwise asleep in waitpid:
# on a small machine every wake-up of the parent is CPU time taken from the stage being timed.
POLL_SECONDS = 2.0


def wait_quietly(proc: subprocess.Popen, poll: Callable[[], None], every: float = POLL_SECONDS) -> int:
    """Block until `proc` exits, calling `poll` every `every` seconds. Popen.wait(timeout) would wake
    up every few milliseconds; a blocking wait in a thread sleeps in the kernel instead."""
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (proc.wait(), done.set()), daemon=True)
    waiter.start()
    while not done.wait(every):
        poll()
    return proc.returncode


def run_child(cmd: list[str], log: Path, out: Path, on_steps: Callable[[int, int, float, float], None] | None = None,
              record_load: bool = False, expect_payload: bool = True) -> tuple[dict | None, str]:
    """Run one pass; returns (payload, error). The child's output goes to its log file; its step
    count is polled from a small progress file so the parent's progress bar can show it. With
    `record_load`, the payload (a timing row) gets `foreign_cpu_share`: what others used meanwhile.
    Without `expect_payload` (a follower node's part of a pass: rank 0 and its result are elsewhere) a
    clean exit is success, ({}, "")."""
    log.parent.mkdir(parents=True, exist_ok=True)
    progress = out.with_suffix(".progress")
    for stale in (out, progress, *rank_error_files(out)):
        if stale.exists():
            stale.unlink()

    def poll() -> None:
        got = read_progress(progress) if on_steps is not None else None
        if got is not None:
            on_steps(*got)

    watch = LoadWatch()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=child_env(progress), cwd=os.getcwd(), preexec_fn=die_with_parent)
        try:
            wait_quietly(proc, poll)
        except BaseException:  # Ctrl-C or a kill of the parent: never leave a child training alone
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    progress.unlink(missing_ok=True)
    payload = json.loads(out.read_text()) if out.exists() else None
    if proc.returncode == 0 and not expect_payload and not rank_errors(out, payload):
        return payload or {}, ""
    if proc.returncode == 0 and payload and not payload.get("error"):
        if record_load:
            payload["foreign_cpu_share"] = round(watch.foreign_share(), 4)
        return payload, ""
    # The rank that failed first holds the cause (a DDP stage); a single process writes rank 0's.
    err = rank_errors(out, payload) or (payload or {}).get("error", "")
    if err:
        return None, err
    return None, describe_exit(proc.returncode, log.read_text(errors="replace"))


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL(None).prctl


_PRCTL = _prctl()  # looked up here: between fork and exec the child must not import anything


def die_with_parent() -> None:
    """In the child, before it starts: have the kernel send it SIGTERM when the study process dies,
    even by SIGKILL, so no stage goes on training unwatched (torchrun passes it on to its ranks)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
