"""Can py-spy attach to a process on this machine? Asked apart from the pass under test, so a pass
that only records an error cannot pass for one that could not have worked."""
from __future__ import annotations

import functools
import subprocess
import sys

from study.profiling.pyspy import find_pyspy


@functools.lru_cache(maxsize=None)
def pyspy_can_attach() -> tuple[bool, str]:
    """(True, "") when `py-spy dump` reads the stack of a sleeping child, else (False, why not)."""
    exe = find_pyspy()
    if exe is None:
        return False, "py-spy is not installed"
    child = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        child.stdout.readline()  # the interpreter is running: py-spy can find its state
        p = subprocess.run([exe, "dump", "--pid", str(child.pid)], capture_output=True, text=True, timeout=60)
    finally:
        child.kill()
        child.wait()
    if p.returncode == 0 and "<module>" in p.stdout:  # the child's own frame was read
        return True, ""
    said = (p.stderr or p.stdout).strip().splitlines()
    return False, f"py-spy dump exited {p.returncode}: {said[0] if said else 'no output'}"
