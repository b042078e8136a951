"""One run of the search in its own process: a timing pass of a candidate stack, as a ladder stage's,
with what others used of the machine meanwhile. The search's default way to measure (tests and the
quality benchmark give AutoSearch a simulated one instead)."""
from __future__ import annotations

import time

from study.core.records import StageResult


def measure_child(sspec, pass_index: int, tag: str) -> tuple[StageResult, float]:
    """One timing pass of a search candidate in its own process, as a ladder stage's."""
    from study.core.child_process import run_child
    from study.core.stage_spec import worker_command

    rep_dir = sspec.report_dir
    rep_dir.mkdir(parents=True, exist_ok=True)
    stage_file = rep_dir / "stage.json"
    sspec.save(stage_file)
    out = rep_dir / f"timing-{tag}.json"
    t0 = time.monotonic()
    payload, err = run_child(worker_command(sspec, stage_file, "timing", pass_index, out),
                             rep_dir / f"timing-{tag}.log", out, record_load=True)
    seconds = time.monotonic() - t0
    sspec.checkpoint_path.unlink(missing_ok=True)  # one per run, tens of MB each, never read
    if payload is None:
        return StageResult(status="failed", error=err, kind="repeat", **sspec.identity()), seconds
    return StageResult.from_dict(payload), seconds
