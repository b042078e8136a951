"""The search's part of a results.jsonl row (its notes["search"]), typed: one class per kind of row the
search writes. Written with `as_notes()`, read back with `of(row)`; a key an older file lacks takes
the field's default and a key a newer one adds is ignored, so every file still reads."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

T = TypeVar("T", bound="_Note")


class _Note:
    KIND = ""
    FILE_NAMES: dict[str, str] = {}  # field -> the key files use, where the two differ

    def as_notes(self) -> dict[str, Any]:
        d = asdict(self)  # type: ignore[call-overload]
        return {"search": {self.FILE_NAMES.get(k, k): v for k, v in d.items()}}

    @classmethod
    def of(cls: type[T], row: Any) -> T | None:
        """This row's search note, or None when the row is of another kind or carries none."""
        raw = row.notes.get("search") if getattr(row, "kind", "") == cls.KIND else None
        if not isinstance(raw, dict):
            return None
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        field_of = {v: k for k, v in cls.FILE_NAMES.items()}
        got = {field_of.get(k, k): v for k, v in raw.items()}
        return cls(**{k: v for k, v in got.items() if k in names})


@dataclass
class RunNote(_Note):
    """One child run of the search (kind "search-repeat"): which run it was, for --resume."""

    KIND = "search-repeat"
    key: str = ""
    round: int = 0
    pass_: int = 0
    role: str = ""  # incumbent | candidate | baseline | best
    candidate: str = ""
    slot: int = 0
    seconds: float = 0.0
    node: str = ""  # the node that measured it, in a search fanned out over a cluster ("": this machine)
    FILE_NAMES = {"pass_": "pass"}  # "pass" is a keyword


@dataclass
class RoundNote(_Note):
    """A row of a round's table (kind "search"): the incumbent, or a candidate and what became of it."""

    KIND = "search"
    round: int = 0
    role: str = ""  # incumbent | candidate
    candidate: str = ""
    incumbent: list[str] = field(default_factory=list)
    incumbent_throughput: float = 0.0
    speedup: float = math.nan
    speedup_low: float = math.nan
    speedup_high: float = math.nan
    pairs: int = 0
    runs: int = 0
    seconds: float = 0.0
    decision: str = ""
    detail: str = ""


@dataclass
class ResultNote(_Note):
    """The search's answer (kind "search-result"): the best stack beside the baseline, and why it stopped."""

    @property
    def busy_check(self) -> str:
        """What the final check's busy pairs mean for its figure, in a sentence ("" when none met one)."""
        if not self.busy_pairs:
            return ""
        if self.busy_pairs >= self.pairs:
            from study.core.machine_load import BUSY_SHARE

            return (f"others used {BUSY_SHARE:.0%} or more of the CPU during every pair of the final check ({self.busy_pairs}), so "
                    f"this speed-up is what a shared machine gave, not what the stack does; rerun on a quieter machine")
        return f"{self.busy_pairs} pair(s) of the final check met a busy machine and are left out"

    KIND = "search-result"
    rounds: int = 0
    stopped: str = ""
    seconds: float = 0.0
    budget_s: float = 0.0
    speedup: float = math.nan
    speedup_low: float = math.nan
    speedup_high: float = math.nan
    pairs: int = 0
    baseline_throughput: float = 0.0
    best_throughput: float = 0.0
    # pairs of the final check that met a busy machine: left out of the speed-up while a quiet pair exists,
    # else the speed-up is theirs (pairs == busy_pairs) and says only what a shared machine gave
    busy_pairs: int = 0
    race_drop: float = 0.0  # the rule's constants this search ran with
    retry_below: float = 0.0
    incumbent_every: int = 0
    strategy: str = ""  # study.search.rules.Strategy's name ("": a row from before strategies, greedy)


def finished_runs(rows: list[Any]) -> dict[str, tuple[Any, float]]:
    """The search's runs among the rows of a results.jsonl, by key (for --resume): (row, wall seconds)."""
    out = {}
    for r in rows:
        note = RunNote.of(r)
        if note is not None and note.key:
            out[note.key] = (r, float(note.seconds))
    return out
