"""cProfile and line_profiler passes on a real tiny stage, in-process."""
from __future__ import annotations

import json
import pstats
from pathlib import Path

from study.profiling import cprofile, lines
from study.profiling.common import rank_path


def test_cprofile_pass_writes_prof_and_top_tables(make_session):
    sess = make_session(profile_steps=3)
    paths = cprofile.run(sess)
    stats = pstats.Stats(paths["cprofile"])
    assert any(func == "train_step" for (_, _, func) in stats.stats)  # type: ignore[attr-defined]
    text = Path(paths["cprofile_top"]).read_text()
    assert "top 30 by cumulative" in text and "top 30 by tottime" in text
    top = json.loads(Path(paths["cprofile_json"]).read_text())
    assert top["steps"] == 3 and top["by_tottime"] and top["by_cumulative"]
    assert top["by_tottime"][0]["tottime_ms"] >= top["by_tottime"][-1]["tottime_ms"]
    assert any(r["function"] == "train_step" for r in top["by_cumulative"])


def test_lines_pass_times_train_step_line_by_line(make_session):
    sess = make_session(profile_steps=3)
    paths = lines.run(sess)
    text = Path(paths["lines"]).read_text()
    assert "def train_step" in text and "backward()" in text
    data = json.loads(Path(paths["lines_json"]).read_text())
    step = next(f for f in data["functions"] if f["function"] == "train_step")
    assert step["ms_per_step"] > 0 and any("backward" in ln["source"] for ln in step["lines"])
    hits = {ln["source"]: ln["hits"] for ln in step["lines"]}
    assert hits["output = s.model(x)"] == 3


def test_other_ranks_get_their_own_file_names(make_session):
    sess = make_session()
    assert rank_path(sess, "cprofile.prof").name == "cprofile.prof"
    sess.ctx.rank = 2
    assert rank_path(sess, "cprofile.prof").name == "cprofile-rank2.prof"
    assert rank_path(sess, "trace_summary.json").name == "trace_summary-rank2.json"


def test_one_registry_holds_every_pass_users_can_name():
    from study.core.config import PROFILE_PASSES
    from study.profiling.passes import PASSES

    assert tuple(PASSES) == PROFILE_PASSES
    assert all(callable(run) for run in PASSES.values())
