"""Shared fixtures for the whole test suite."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `pytest` run without the package installed
    sys.path.insert(0, str(REPO))

from study.data import synthetic  # noqa: E402
from study.core.machine_load import RETRIES_ENV  # noqa: E402

# A stage measured on a busy machine is timed again (study/core/machine_load.py). In the suite that would
# make its length follow the machine's load, and no test reads figures that need it: only the test of
# that rule turns it back on.
os.environ.setdefault(RETRIES_ENV, "0")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding all three synthetic datasets at their default sizes, written once per
    session (about a second): ``cifar-10-batches-py/`` (2000 train / 500 test), ``oxford-iiit-pet/``
    (120 trainval / 40 test), ``imagenet/`` (4 classes, 80 train / 20 val). Shared: treat it as
    read-only; tests that modify data write their own copy."""
    root = tmp_path_factory.mktemp("data")
    synthetic.write_all(root, seed=0)
    return root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that reads the session's dry run is slow whatever its own body costs: the dry run is a
    whole study in child processes (about 40 s here), paid by the first test that asks for it. Marked
    here, beside the fixture, so that no test file has to remember it and `-m "not slow"` never runs it."""
    for item in items:
        if "tiny_dry_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_dry_run(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path):
    """One dry run as a user types it (the CLI in its own process): the tiny model with
    ``--stack workers=auto``, so the baseline, a stage with the worker sweep, the pictures pass on
    its last stage and every report. Run once per session for the tests that read a dry run's
    outputs (``cwd``, ``run``, the finished process ``proc``): treat it as read-only. Every test that
    asks for it is marked slow (pytest_collection_modifyitems above)."""
    from types import SimpleNamespace

    from tests.util import run_study

    cwd = tmp_path_factory.mktemp("dry-run")
    proc = run_study("--dry-run", "--model", "tiny", "--profile", "", "--stack", "workers=auto", "--data-root",
                     str(synthetic_root), "--run-name", "dry", cwd=cwd)
    return SimpleNamespace(cwd=cwd, run="dry", proc=proc)
