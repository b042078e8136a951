"""The Python API, for notebooks and scripts: run a study, or load a finished one, and read its figures.

    import study
    result = study.run(model="resnet18", stack="workers=2,channels_last", steps=30, repeats=3)
    result.frame()      # pandas DataFrame, one row per stage (the columns of stages.csv)
    print(result.verdict)
    study.load("reports/RUN").frame()

`run` takes the CLI's long options as keywords (underscores for dashes; lists or comma-separated
strings for stack and profile) and runs the study the way `python -m study` does: every stage in its own
process, the same preflight and exit rules. Plug-ins travel to those processes as references
("module:function" or "file.py:function"), never as objects: a function defined in a notebook cell
has no module a child process could import, so put it in a .py file and pass its reference.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.core.config import ConfigError, RunConfig


class StudyFailed(RuntimeError):
    """A study ended with a failed stage (exit code 3); its results are still readable (`.result`)."""

    def __init__(self, message: str, result: "Result") -> None:
        super().__init__(message)
        self.result = result


@dataclass
class Result:
    """One run's figures, read from reports/<run>/results.jsonl (what every table of the run comes from)."""

    path: Path
    exit_code: int = 0
    _verdict: str | None = field(default=None, repr=False)

    @property
    def rows(self) -> list:
        """Every row of results.jsonl (study.core.records.StageResult), in the order they were written."""
        from study.core.records import read_results

        return read_results(self.path / "results.jsonl")

    def frame(self):  # -> pandas.DataFrame
        """One row per stage, the columns of stages.csv: samples/s with its interval, speed-ups against
        the stage before and the baseline with theirs, phase shares, memory, the metric, status."""
        from study.report.ladder import ladder_frame

        return ladder_frame(self.rows)

    @property
    def verdict(self) -> str:
        """The verdict at the top of summary.md, as text."""
        if self._verdict is None:
            from study.report.reading import RunData
            from study.report.verdict import verdict

            part = verdict(RunData(self.path))
            self._verdict = "\n\n".join(text for kind, text in part.blocks if kind == "p")
        return self._verdict

    def __repr__(self) -> str:
        return f"<study result {self.path} ({len([r for r in self.rows if r.kind == 'stage'])} stages)>"


def load(path: str | Path) -> Result:
    """A finished (or interrupted) run: reports/<run> or its results.jsonl."""
    p = Path(path)
    if p.name == "results.jsonl":
        p = p.parent
    if not (p / "results.jsonl").is_file():
        raise ConfigError(f"no results.jsonl in {p}; give the folder reports/<run> of a study")
    return Result(p)


def config_of(**options: Any) -> RunConfig:
    """The RunConfig the CLI would build from these long options (same defaults, same checks)."""
    from study.cli import FIELDS, LIST_OPTIONS, build_config

    unknown = sorted(set(options) - set(FIELDS) - set(LIST_OPTIONS) - {"config"})
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; the options are the long options of "
                          f"`python -m study --help`, with underscores (batch_size=64)")
    ns = argparse.Namespace(**{name: None for name in (*FIELDS, *LIST_OPTIONS, "config")})
    for k, v in options.items():
        setattr(ns, k, ",".join(v) if k in LIST_OPTIONS and isinstance(v, (list, tuple)) else v)
    return build_config(ns)


def run(**options: Any) -> Result:
    """Run a study (what `python -m study` does with these options) and return its Result.

    Raises ConfigError for bad input (before any stage starts) and StudyFailed when a stage failed;
    KeyboardInterrupt stops the running stage and keeps the finished ones (rerun with resume=True)."""
    for key, value in options.items():
        if callable(value) and not isinstance(value, (str, Path)):
            raise ConfigError(f"{key} must be a reference such as 'my_module:{getattr(value, '__name__', 'build')}' "
                              f"(a function in a .py file): every stage runs in a fresh process, which cannot "
                              f"import a function defined in a notebook; put it in a .py file and pass its reference")
    cfg = config_of(**options)
    from study.orchestrate import run_study

    code = run_study(cfg)
    result = Result(cfg.report_dir, exit_code=code)
    if code == 3:
        failed = [r.name for r in result.rows if r.kind == "stage" and r.status == "failed"]
        raise StudyFailed(f"stage(s) failed: {', '.join(failed) or 'the sanity check'}; see {cfg.report_dir}", result)
    return result
