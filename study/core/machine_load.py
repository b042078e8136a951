"""How much of the machine others used while a pass ran: the share of all CPU time spent outside the
study's own process tree. A neighbour that takes the cores a stage wanted makes the stage look slow,
and without this figure the report would state the slowdown as what the toggle does.

Read from the parent, which starts every pass and waits for it: the kernel's busy time over all
CPUs (/proc/stat) minus the parent's own CPU time and that of its waited-for children (the pass, its
loader workers, DDP ranks: each waits for its own, so their time reaches the parent). Nothing polls;
two reads of /proc/stat per pass. The parent's own polling counts as the study's. Torch-free.
"""
from __future__ import annotations

import os
import time

# A pass during which others used at least this share of all CPU time is "busy": measured again
# (bounded), and never the only evidence that a toggle helps or hurts. A fifth of the machine is a
# core and a half of eight, one core of a two-core laptop at 40 %: enough to move a timed step.
BUSY_SHARE = 0.20
RETRIES_ENV = "STUDY_BUSY_RETRIES"
DEFAULT_RETRIES = 2  # extra attempts of a busy timing run before its figures are kept as they are


def busy_retries(configured: int = -1) -> int:
    """How many times a busy timing run is measured again: --busy-retries when given (0: never), else
    $STUDY_BUSY_RETRIES (the test suite sets 0, so its length does not follow the machine's load), else 2."""
    if configured >= 0:
        return configured
    raw = os.environ.get(RETRIES_ENV, "")
    return max(int(raw), 0) if raw.strip().isdigit() else DEFAULT_RETRIES


def machine_busy_seconds() -> float | None:
    """CPU seconds all CPUs spent busy since boot (user, nice, system, irq, softirq, steal), or None
    where /proc/stat is not there."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:9]]  # guest time is already inside user time
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """This process's CPU time and that of every descendant it (or they) waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LoadWatch:
    """Started before a pass, read after the parent waited for it."""

    def __init__(self) -> None:
        self.wall0 = time.monotonic()
        self.busy0 = machine_busy_seconds()
        self.own0 = own_cpu_seconds()

    def foreign_share(self) -> float:
        """Others' share of all CPU time since the start, 0-1; -1 where it cannot be read."""
        busy = machine_busy_seconds()
        wall = time.monotonic() - self.wall0
        if busy is None or self.busy0 is None or wall <= 0:
            return -1.0
        foreign = (busy - self.busy0) - (own_cpu_seconds() - self.own0)
        return min(max(foreign / (wall * (os.cpu_count() or 1)), 0.0), 1.0)


def is_busy(share: float) -> bool:
    return share >= BUSY_SHARE


def describe(share: float) -> str:
    return f"others used {share * 100:.0f} % of the machine's CPU time while it ran"


STUDY_PID_ENV = "STUDY_PID"  # the study process's pid, set for every pass it starts (study.core.stage_spec.child_env)


def parent_of(pid: int) -> int:
    """The parent pid of `pid` from /proc (0 when it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")"
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def in_study(pid: int, study_pid: int) -> bool:
    """Whether `pid` is the study process or one of its descendants."""
    seen = 0
    while pid > 1 and seen < 64:
        if pid == study_pid:
            return True
        pid, seen = parent_of(pid), seen + 1
    return False


def foreign_gpu_processes(device_index: int) -> int:
    """Processes outside the study computing on CUDA device `device_index`, as NVML lists them; -1
    where NVML is not installed (the nvidia-ml-py package) or cannot answer."""
    try:
        import pynvml
    except ImportError:
        return -1
    try:
        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
            pids = [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 — NVML errors are many (no driver, no permission): no answer
        return -1
    study_pid = int(os.environ.get(STUDY_PID_ENV, os.getpid()))
    return sum(not in_study(pid, study_pid) for pid in pids)
