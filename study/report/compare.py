"""Two runs side by side: reports/compare-<A>-vs-<B>/, stages matched by name.

Like a run's report, the comparison is a list of sections (Pair -> Part); a new one is one more
function in COMPARE_SECTIONS.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from study.profiling.trace_summary import diff_ops, headline
from study.core.records import StageResult
from study.core import fmt
from study.report.doc import Doc, Part, rel
from study.report.frames import phase_ms
from study.report.ladder import speedup_of
from study.report.reading import RunData


@dataclass
class Pair:
    a: RunData
    b: RunData
    out_dir: Path

    @property
    def shared(self) -> list[str]:
        """Stage names in both runs, in A's ladder order."""
        names_b = {r.name for r in self.b.stages}
        return [r.name for r in self.a.stages if r.name in names_b]

    def rows(self, name: str) -> tuple[StageResult, StageResult]:
        return (next(r for r in self.a.stages if r.name == name), next(r for r in self.b.stages if r.name == name))


def compare_frame(a: RunData, b: RunData) -> pd.DataFrame:
    rb = {r.name: r for r in b.stages}
    out = []
    for ra in a.stages:
        r2 = rb.get(ra.name)
        if r2 is None:
            continue
        ok_a, ok_b = ra.status == "ok", r2.status == "ok"

        def tp(r: StageResult, ok: bool) -> str:
            return fmt.with_interval(r.throughput, r.throughput_ci_low, r.throughput_ci_high) if ok else r.status

        def when(ok: bool, v: float | None) -> float | None:
            return v if ok else None

        out.append({"stage": ra.name, f"{a.name} samples/s": tp(ra, ok_a), f"{b.name} samples/s": tp(r2, ok_b),
                    f"{b.name}/{a.name}": fmt.speedup(*speedup_of(r2, ra)),
                    f"{a.name} step ms": fmt.num(when(ok_a, ra.step_time_p50 * 1000), ".1f"),
                    f"{b.name} step ms": fmt.num(when(ok_b, r2.step_time_p50 * 1000), ".1f"),
                    f"{a.name} data wait %": fmt.num(when(ok_a, ra.data_wait_share * 100), ".1f"),
                    f"{b.name} data wait %": fmt.num(when(ok_b, r2.data_wait_share * 100), ".1f"),
                    f"{a.name} MFU %": fmt.num(when(ok_a and bool(ra.mfu), ra.mfu * 100), ".2f"),
                    f"{b.name} MFU %": fmt.num(when(ok_b and bool(r2.mfu), r2.mfu * 100), ".2f"),
                    f"{a.name} metric": fmt.metric(ra.metric_name, when(ok_a, ra.metric)),
                    f"{b.name} metric": fmt.metric(r2.metric_name, when(ok_b, r2.metric))})
    return pd.DataFrame(out)


def config_diff(a: RunData, b: RunData) -> pd.DataFrame:
    ca, cb = a.config.get("config", {}), b.config.get("config", {})
    keys = sorted(k for k in set(ca) | set(cb) if k not in ("run_name",) and ca.get(k) != cb.get(k))
    rows = [{"setting": k, a.name: json.dumps(ca.get(k)), b.name: json.dumps(cb.get(k))} for k in keys]
    ea, eb = a.config.get("env", {}), b.config.get("env", {})
    rows += [{"setting": f"env.{k}", a.name: json.dumps(ea.get(k)), b.name: json.dumps(eb.get(k))}
             for k in sorted(set(ea) | set(eb)) if ea.get(k) != eb.get(k)]
    da = a.stages[0].device_name if a.stages else ""
    db = b.stages[0].device_name if b.stages else ""
    if da != db:
        rows.append({"setting": "device", a.name: da, b.name: db})
    return pd.DataFrame(rows)


def intro(p: Pair) -> Part:
    part = Part()
    part.para(f"Stages matched by name. Ratios are {p.b.name} ÷ {p.a.name} throughput with an interval from both "
              f"runs' 95% CIs; (noise) when it contains 1.0.")
    cfg = config_diff(p.a, p.b)
    if len(cfg):
        part.heading("What differs between the runs")
        part.table(cfg)
    return part


def side_by_side(p: Pair) -> Part:
    from study.report import plots

    a, b, part = p.a, p.b, Part()
    cmp = compare_frame(a, b)
    part.heading("Stages side by side")
    part.table(cmp)
    part.show_table(f"{a.name} vs {b.name}", cmp.iloc[:, :4] if len(cmp) else cmp)
    names_a, names_b = {r.name for r in a.stages}, {r.name for r in b.stages}
    only = [f"only in {a.name}: {r.name}" for r in a.stages if r.name not in names_b]
    only += [f"only in {b.name}: {r.name}" for r in b.stages if r.name not in names_a]
    if only:
        part.para("; ".join(only))

    def tput(r: StageResult) -> float | None:
        return r.throughput if r.status == "ok" else None

    pairs = [p.rows(n) for n in p.shared]
    part.image(plots.grouped(p.shared, {a.name: [tput(ra) for ra, _ in pairs], b.name: [tput(rb) for _, rb in pairs]},
                             p.out_dir / "throughput.png", f"{a.name} vs {b.name}: samples/s"),
               "throughput side by side")
    return part


def phases(p: Pair) -> Part:
    part, rows = Part(), []
    for n in p.shared:
        for run, r in zip((p.a, p.b), p.rows(n)):
            if r.status == "ok":
                rows.append({"stage": n, "run": run.name, **{f"{ph} ms": fmt.num(ms, ".2f")
                                                             for ph, ms in phase_ms(r).items()}})
    if rows:
        part.heading("Phases side by side (ms per step)")
        part.table(rows)
    return part


def trace_diff(p: Pair) -> Part:
    part, rows = Part(), []
    for n in p.shared:
        ra, rb = p.rows(n)
        sa, sb = p.a.trace_summary(ra), p.b.trace_summary(rb)
        if sa and sb:
            rows.append({"stage": n, f"{p.a.name} step ms": fmt.num(sa["step_ms_mean"], ".2f"),
                         f"{p.b.name} step ms": fmt.num(sb["step_ms_mean"], ".2f"),
                         "what changed": headline(diff_ops(sa, sb))})
    if rows:
        part.heading(f"Trace diff per stage ({p.a.name} → {p.b.name})")
        part.table(rows)
    return part


def links(p: Pair) -> Part:
    part = Part()
    part.links([(f"{p.a.name} summary", rel(p.a.dir / "summary.md", p.out_dir)),
                (f"{p.b.name} summary", rel(p.b.dir / "summary.md", p.out_dir))])
    return part


COMPARE_SECTIONS: list[Callable[[Pair], Part]] = [intro, side_by_side, phases, trace_diff, links]


def compare_report(dir_a: Path, dir_b: Path) -> tuple[Doc, Path]:
    """The comparison Doc and its folder, reports/compare-<A>-vs-<B>/ (created; PNGs written there)."""
    a, b = RunData(dir_a), RunData(dir_b)
    out_dir = a.dir.parent / f"compare-{a.name}-vs-{b.name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    pair = Pair(a, b, out_dir)
    return Doc(f"study: {a.name} vs {b.name}", [section(pair) for section in COMPARE_SECTIONS]), out_dir
