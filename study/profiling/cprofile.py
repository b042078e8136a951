"""cProfile pass: every Python call of a few training steps, as a .prof file and top-N tables.

`cprofile.prof` opens with pstats, snakeviz or `python -m pstats`; `cprofile_top.txt` holds the top
functions by cumulative and by own (tottime) time; `cprofile_top.json` the same rows for the report.
"""
from __future__ import annotations

import cProfile
import io
import json
import pstats
from typing import Any

from study.profiling.common import rank_path, warm_up
from study.core.records import write_atomic

TOP_N = 30


def top_rows(stats: pstats.Stats, key: str, n: int = TOP_N, steps: int = 1) -> list[dict[str, Any]]:
    """The n functions with the largest `key` ("tottime" or "cumulative"), times in ms per step."""
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": func, "file": file, "line": line, "ncalls": nc, "primitive_calls": cc,
                     "tottime_ms": tt * 1000.0 / steps, "cumtime_ms": ct * 1000.0 / steps})
    field = "tottime_ms" if key == "tottime" else "cumtime_ms"
    rows.sort(key=lambda r: -r[field])
    return rows[:n]


def run(sess: Any) -> dict[str, str]:
    warm_up(sess)
    steps = sess.cfg.profile_steps
    prof = cProfile.Profile()
    prof.enable()
    try:
        records = sess.run_steps(steps)
    finally:
        prof.disable()
    prof_path = rank_path(sess, "cprofile.prof")
    prof.dump_stats(str(prof_path))

    n = max(len(records), 1)
    buf = io.StringIO()
    buf.write(f"cProfile of {len(records)} training steps of stage {sess.spec.name} (after "
              f"{sess.warmup} unprofiled warm-up steps); times are totals over those steps\n\n")
    stats = pstats.Stats(prof, stream=buf)
    for key in ("cumulative", "tottime"):
        buf.write(f"=== top {TOP_N} by {key} ===\n")
        stats.sort_stats(key).print_stats(TOP_N)
    text_path = rank_path(sess, "cprofile_top.txt")
    write_atomic(text_path, buf.getvalue())
    json_path = rank_path(sess, "cprofile_top.json")
    write_atomic(json_path, json.dumps({
        "steps": len(records), "total_s": stats.total_tt,  # type: ignore[attr-defined]
        "by_tottime": top_rows(stats, "tottime", steps=n),
        "by_cumulative": top_rows(stats, "cumulative", steps=n)}, indent=1))
    return {"cprofile": str(prof_path), "cprofile_top": str(text_path), "cprofile_json": str(json_path)}
