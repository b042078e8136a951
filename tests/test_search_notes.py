"""The search's rows are typed: what the engine writes reads back field for field, and rows written by an
older (fewer keys) or a newer (more keys) study still read."""
from __future__ import annotations

import math

from study.core.records import StageResult
from study.search.notes import ResultNote, RoundNote, RunNote


def row(kind: str, search: dict) -> StageResult:
    return StageResult(run="r", stage=1, name="x", kind=kind, notes={"search": search})


def test_each_kind_round_trips_and_keeps_the_file_names() -> None:
    run = RunNote(key="1|0|candidate|amp|1|abc", round=1, pass_=0, role="candidate", candidate="amp", slot=1, seconds=3.5)
    notes = run.as_notes()
    assert notes["search"]["pass"] == 0 and "pass_" not in notes["search"]  # what resume reads in old files too
    assert RunNote.of(StageResult(run="r", stage=1, name="x", kind="search-repeat", notes=notes)) == run
    rnd = RoundNote(round=2, role="candidate", candidate="compile=default", incumbent=["amp=bf16"], speedup=1.3,
                    speedup_low=1.1, speedup_high=1.5, pairs=3, runs=3, decision="kept")
    assert RoundNote.of(row("search", rnd.as_notes()["search"])) == rnd
    assert ResultNote.of(row("search-result", {"rounds": 2, "stopped": "no candidate left"})).rounds == 2


def test_older_and_newer_rows_read_and_other_kinds_do_not() -> None:
    old = RoundNote.of(row("search", {"round": 1, "role": "incumbent"}))  # an early file: no speed-up keys
    assert old.role == "incumbent" and math.isnan(old.speedup) and old.incumbent == []
    newer = ResultNote.of(row("search-result", {"rounds": 1, "a_later_field": [1, 2]}))
    assert newer.rounds == 1
    assert RoundNote.of(row("search-result", {"round": 1})) is None  # kinds do not mix
    assert RunNote.of(StageResult(run="r", stage=0, name="00-base", kind="stage")) is None
