"""A real stage session (tiny model, synthetic CIFAR) built in-process, for the profiling passes."""
from __future__ import annotations

from pathlib import Path

import pytest

from study.core.config import RunConfig
from study.stage.session import build_session
from study.core.stage_spec import StageSpec


@pytest.fixture
def make_session(tmp_path: Path, synthetic_root: Path):
    def make(**changes):
        cfg = RunConfig(model="tiny", data_root=str(synthetic_root), subset=256, val_subset=32, batch_size=16,
                        profile_steps=5, warmup=1, device="cpu", run_name="t",
                        profiles_root=str(tmp_path / "profiles"), reports_root=str(tmp_path / "reports"))
        cfg = cfg.replace(**changes)
        return build_session(StageSpec(index=0, name="00-base", stack=(), config=cfg))

    return make
