"""A toggle is one file: a throwaway toggle written outside the package, named in $STUDY_TOGGLES, shows
up in `study list`, runs as a stage of `--stack`, is a candidate of the search and is advised for the
bottleneck it declares, with no other edit anywhere."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from optimizations import base
from study.advice import advise, diagnose, evidence_of
from study.core.records import StageResult
from tests.optimizations.helpers import cpu_env
from tests.util import run_study, table_rows

TOGGLE = '''
import os

from optimizations.base import Cost, Optimization, register


@register
class Throwaway(Optimization):
    name = "throwaway"
    description = "a toggle from one file outside the package"
    conflicts = ("hogwild",)
    prior = 1  # before every built-in toggle
    cost = Cost(warm_s=3.0)
    addresses = {"data-bound": "it says it helps with data"}

    def setup(self, ctx):
        ctx.notes["throwaway"] = f"set up in process {os.getpid()}"
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "throwaway_toggle.py").write_text(TOGGLE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv(base.PLUGINS_ENV, "throwaway_toggle")
    yield folder
    base.REGISTRY.pop("throwaway", None)
    base._CONFLICTS.discard(frozenset(("throwaway", "hogwild")))
    sys.modules.pop("throwaway_toggle", None)


def test_the_search_and_the_advice_find_it(plugin: Path) -> None:
    specs = base.candidates(cpu_env())
    assert specs[0] == "throwaway"  # its prior puts it first
    assert "throwaway" not in base.candidates(cpu_env(), ["hogwild=2"])  # its conflict, declared on one side only
    assert "throwaway" in base.conflicts_of("hogwild")
    ev = evidence_of(StageResult(run="r", stage=0, name="00-base", status="ok", throughput=100.0, t_data=0.05,
                                 t_forward=0.02, t_backward=0.02, t_optimizer=0.01, data_wait_share=0.5))
    found = diagnose(ev)
    advice = advise(ev, found, cpu_env())
    assert advice[0].toggle == "throwaway"
    assert advice[0].finding.rule.effect_of("throwaway").endswith("it says it helps with data")
    assert base.first_run_cost("throwaway", "cpu", first=True) == 3.0


@pytest.mark.slow
def test_list_and_a_stage_of_it_run_in_their_own_processes(plugin: Path, synthetic_root: Path, tmp_path: Path) -> None:
    env = {base.PLUGINS_ENV: "throwaway_toggle", "PYTHONPATH": str(plugin)}
    listed = run_study("list", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    row = table_rows(listed.stdout)["throwaway"]
    assert row[2] == "yes" and row[3] == "hogwild" and row[4] == "a toggle from one file outside the package"  # its own words, unfolded

    p = run_study("--model", "tiny", "--data-root", str(synthetic_root), "--stack", "throwaway", "--steps", "3",
                  "--warmup", "1", "--subset", "64", "--val-subset", "16", "--batch-size", "8", "--threads", "1",
                  "--profile", "", "--no-pictures", "--run-name", "p", cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in (tmp_path / "reports" / "p" / "results.jsonl").read_text().splitlines()]
    stage = next(r for r in rows if r["kind"] == "stage" and r["name"] == "01-throwaway")
    assert stage["status"] == "ok" and stage["stack"] == ["throwaway"]
    assert stage["notes"]["throwaway"].startswith("set up in process ")  # its hook ran in the stage process
