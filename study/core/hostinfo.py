"""What /proc says about this machine: its first CPU (cpuinfo), a field of a status file (empty or 0
where there is no such file)."""
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


def proc_field_mb(path: str, key: str) -> float:
    """A "Key: N kB" line of a /proc file, in MB (0: unknown)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0
