"""What /proc/cpuinfo says about this machine's first CPU (empty where there is no such file)."""
from __future__ import annotations

import functools
from pathlib import Path


@functools.lru_cache(maxsize=1)
def cpuinfo() -> dict[str, str]:
    """Fields of the first processor block: "model name", "cpu MHz", "flags", ..."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            if ":" in line:
                k, v = (s.strip() for s in line.split(":", 1))
                if k and k not in info:
                    info[k] = v
    except OSError:
        pass
    return info
