"""study: which training optimizations pay off for this model, data and machine, and why.

From Python: `study.run(**options)` runs a study and `study.load("reports/RUN")` reads a finished one;
both return a Result (`.frame()`, `.verdict`). See study.api.
"""
__version__ = "0.1.0"

from study.api import Result, StudyFailed, load, run  # noqa: E402 — light: no torch until a study runs

__all__ = ["Result", "StudyFailed", "load", "run", "__version__"]
