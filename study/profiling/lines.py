"""line_profiler pass: time per source line of the step function (and the helpers it calls).

`lines.txt` is line_profiler's own listing; `lines_top.json` holds the hottest lines for the report.
"""
from __future__ import annotations

import io
import json
import linecache
from typing import Any

from study.profiling.common import rank_path, warm_up
from study.core.records import write_atomic


def targets() -> list[Any]:
    """What to time line by line: the one step function, its host→device copy, the epoch loop."""
    from study.train import loop

    return [loop.train_step, loop.TrainState.to_device, loop.train_epoch]


def hottest_lines(stats: Any, n: int = 10, steps: int = 1) -> list[dict[str, Any]]:
    """Per profiled function: its time and its n hottest lines, in ms per training step.

    Kept per function because an outer function's call line holds the whole inner call (the epoch
    loop's `train_step(...)` line would top any global list)."""
    out = []
    for (file, _first, func), timings in stats.timings.items():
        total = sum(t for _, _, t in timings)
        rows = [{"line": lineno, "hits": hits, "ms_per_step": t * stats.unit * 1000.0 / steps,
                 "share": t / total if total else 0.0, "source": linecache.getline(file, lineno).strip()}
                for lineno, hits, t in timings]
        rows.sort(key=lambda r: -r["ms_per_step"])
        out.append({"function": func, "file": file, "ms_per_step": total * stats.unit * 1000.0 / steps,
                    "lines": rows[:n]})
    return out


def run(sess: Any) -> dict[str, str]:
    from line_profiler import LineProfiler

    warm_up(sess)
    lp = LineProfiler()
    for f in targets():
        lp.add_function(f)
    lp.enable_by_count()
    try:
        records = sess.run_steps(sess.cfg.profile_steps)
    finally:
        lp.disable_by_count()
    buf = io.StringIO()
    buf.write(f"line_profiler over {len(records)} training steps of stage {sess.spec.name} "
              f"(after {sess.warmup} unprofiled warm-up steps)\n")
    lp.print_stats(stream=buf, output_unit=1e-3, stripzeros=True)
    text_path = rank_path(sess, "lines.txt")
    write_atomic(text_path, buf.getvalue())
    json_path = rank_path(sess, "lines_top.json")
    top = hottest_lines(lp.get_stats(), steps=max(len(records), 1))
    write_atomic(json_path, json.dumps({"steps": len(records), "functions": top}, indent=1))
    return {"lines": str(text_path), "lines_json": str(json_path)}
