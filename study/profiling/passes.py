"""The one registry of profiling passes: name → run(session) -> {profile kind: path}.

Imported by the stage worker only (the passes import torch); the parent knows the names from
`study.core.config.PROFILE_PASSES`, and a test keeps the two in step.
"""
from __future__ import annotations

from typing import Any, Callable

from study.profiling import cprofile, lines, pyspy, torch_trace

PASSES: dict[str, Callable[[Any], dict[str, str]]] = {
    "cprofile": cprofile.run,
    "torch": torch_trace.run,
    "pyspy": pyspy.run,
    "lines": lines.run,
}
