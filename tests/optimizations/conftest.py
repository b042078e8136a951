"""Fixtures for the toggle tests: a tiny config per test, and real stages run once per session."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from optimizations.base import Env, parse_stack
from study.core.config import RunConfig
from study.core.records import StageResult
from tests.optimizations.helpers import tiny_config


@pytest.fixture
def tiny_cfg(synthetic_root: Path, tmp_path: Path) -> RunConfig:
    return tiny_config(synthetic_root, tmp_path)


@pytest.fixture(scope="session")
def toggle_stage(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[StageResult, Path]]:
    """Run the stage that adds `spec` to the baseline through the real StageRunner (child processes,
    torchrun for ddp, ...), once per (spec, settings) in the session; returns (stage row, stage dir).

    Only the toggle's own stage runs: the baseline is the same for every toggle and is tested elsewhere.
    """
    from study.runner.ladder import StageRunner

    cache: dict[tuple, tuple[StageResult, Path]] = {}

    def run(spec: str, **settings) -> tuple[StageResult, Path]:
        key = (spec, tuple(sorted(settings.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp("stage")
            values = dict(model="tiny", data_root=str(synthetic_root), dry_run=True, run_name="t",
                          reports_root=str(out / "reports"), profiles_root=str(out / "profiles"))
            cfg = RunConfig(**{**values, **settings})
            runner = StageRunner(cfg, parse_stack(spec), Env.detect(cfg.device))
            stage = runner.stages[-1]
            if stage.skip_reason:
                row = runner.skipped_row(stage)
            else:  # its timing runs, then its row (and profiling passes, none here)
                row = runner.stage_row(stage, [runner.timed_run(stage, r) for r in range(cfg.repeats)])
            cache[key] = (row, cfg.report_dir / "stages" / stage.spec.name)
        return cache[key]

    return run
