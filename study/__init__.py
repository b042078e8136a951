"""study: which training optimizations pay off for this model, data and machine, and why.

From Python: `study.run(**options)` runs a study and `study.load("reports/RUN")` reads a finished one;
both return a Result (`.frame()`, `.verdict`). See study.api.
"""
__version__ = "0.1.0"


def run(**options):  # noqa: ANN201 — study.api.Result; imported on use so `import study` stays light
    from study.api import run as _run

    return _run(**options)


def load(path):  # noqa: ANN001, ANN201
    from study.api import load as _load

    return _load(path)


__all__ = ["run", "load", "__version__"]
