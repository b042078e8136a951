"""The sanity check, the parent's side (torch-free): run the sanity pass once on the baseline stage's spec
in a fresh process before the ladder, and record its row; the rules that judge it are study.core.sanity."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from study.core.recorder import Recorder
from study.core.records import StageResult
from study.core.sanity import KIND, PASS_NAME, latest, result_row


def run_check(spec: Any, recorder: Recorder, on_pass: Callable[[str], None] = lambda what: None) -> StageResult:
    """Run the check in a fresh process on `spec` (the baseline stage's), hand its row to the run's
    recorder and return it."""
    from study.core.child_process import run_child
    from study.core.stage_spec import worker_command

    cfg = spec.config
    rep_dir: Path = cfg.report_dir / "stages" / KIND
    rep_dir.mkdir(parents=True, exist_ok=True)
    stage_file, out = rep_dir / "stage.json", rep_dir / f"{PASS_NAME}.json"
    spec.save(stage_file)  # the baseline: no toggles, one plain process
    on_pass(f"sanity check: training {spec.name}'s model on one batch")
    started = time.time()
    payload, err = run_child(worker_command(spec, stage_file, PASS_NAME, 0, out), rep_dir / f"{PASS_NAME}.log", out)
    row = result_row(spec.identity(), payload, err, started)
    recorder.add(row)
    return row


def before_ladder(cfg: Any, env: Any, recorder: Recorder | None = None,
                  on_pass: Callable[[str], None] = lambda what: None) -> StageResult:
    """The check on the baseline stage of `cfg`; with --resume, a check this config already passed is kept."""
    from study.runner.ladder import planned

    recorder = recorder or Recorder(cfg.report_dir)
    spec = planned(cfg, env, 0, "00-base", []).spec
    if cfg.resume:
        prev = latest(recorder.rows())
        if prev is not None and prev.status == "ok" and prev.config_hash == spec.identity()["config_hash"]:
            return prev
    return run_check(spec, recorder, on_pass)
