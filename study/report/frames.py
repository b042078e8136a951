"""Rows of the per-run tables, built from stage rows and the summaries of their profile files.

Every figure is text already (fmt), so Markdown, HTML and the console show the same cells.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from study.profiling.trace_summary import CATEGORIES, top_kernels, top_ops
from study.core.records import StageResult
from study.core import fmt
from study.report.ladder import is_ablation
from study.report.reading import RunData

PHASE_FIELDS = (("data", "t_data"), ("h2d", "t_h2d"), ("forward", "t_forward"), ("backward", "t_backward"),
                ("optimizer", "t_optimizer"))
TOP_ROWS = 8
UNREPRESENTATIVE = 2.0  # profiled steps this many times slower than the timing pass's median


def phase_ms(r: StageResult) -> dict[str, float]:
    """Mean ms per step in each phase of the timing pass."""
    return {p: getattr(r, f) * 1000 for p, f in PHASE_FIELDS}


def phase_frame(rows: list[StageResult]) -> pd.DataFrame:
    out = []
    for r in rows:
        if r.status != "ok":
            continue
        ms = phase_ms(r)
        out.append({"stage": r.name, **{f"{p} ms": fmt.num(v, ".2f") for p, v in ms.items()},
                    "step ms": fmt.num(sum(ms.values()), ".2f"), "data wait %": fmt.num(r.data_wait_share * 100, ".1f")})
    return pd.DataFrame(out)


def mfu_frame(rows: list[StageResult]) -> pd.DataFrame:
    out = []
    for r in rows:
        if r.status != "ok":
            continue
        achieved = r.flops_per_sample * r.throughput
        mfu = r.mfu or (achieved / r.peak_flops if r.peak_flops else 0.0)
        out.append({"stage": r.name, "FLOPs/sample": fmt.si(r.flops_per_sample, "FLOP"),
                    "achieved": fmt.si(achieved, "FLOP/s"), "peak": fmt.si(r.peak_flops, "FLOP/s"),
                    "MFU %": fmt.num(mfu * 100, ".2f") if mfu else fmt.DASH,
                    "peak source": r.peak_flops_source or fmt.DASH})
    return pd.DataFrame(out)


def quality_frame(rows: list[StageResult]) -> pd.DataFrame:
    out = []
    for r in rows:
        if r.status != "ok":
            continue
        extra = ", ".join(f"{k} {v:.3f}" for k, v in sorted(r.metrics.items()) if isinstance(v, (int, float)))
        out.append({"stage": r.name, r.metric_name or "metric": fmt.num(r.metric, ".3f"),
                    "first loss": fmt.num(r.first_loss or None, ".4f"),  # 0: a row from before it was recorded
                    "final loss": fmt.num(r.final_loss, ".4f"), "steps": r.steps_total,
                    "all metrics": extra or fmt.DASH,
                    "peak mem MB": fmt.num(r.peak_memory_mb, ".0f"), "memory": r.memory_kind})
    return pd.DataFrame(out)


def profile_ratio(r: StageResult, summary: dict) -> float | None:
    """Profiled step time ÷ the timing pass's median step: profiler overhead plus whatever else the
    machine did meanwhile. Far above 1, the profile does not show the measured stage."""
    if not r.step_time_p50 or not summary.get("step_ms_mean"):
        return None
    return summary["step_ms_mean"] / (r.step_time_p50 * 1000)


def category_frame(run: RunData, rows: list[StageResult]) -> pd.DataFrame:
    summaries = [(r, run.trace_summary(r)) for r in rows]
    summaries = [(r, s) for r, s in summaries if s]
    # Categories with no time in any stage (no GPU: kernel, memcpy, ...) are left out.
    used = [c for c in CATEGORIES if any(s.get("categories_ms", {}).get(c, 0.0) > 0 for _, s in summaries)]
    out = []
    for r, s in summaries:
        cats = s.get("categories_ms", {})
        loop = s.get("loop_step_ms") or []
        out.append({"stage": r.name, **{c: fmt.num(cats.get(c, 0.0), ".2f") for c in used},
                    "sum ms": fmt.num(sum(cats.values()), ".2f"),
                    "profiled step ms": fmt.num(s.get("step_ms_mean"), ".2f"),
                    "loop step ms": fmt.num(sum(loop) / len(loop), ".2f") if loop else fmt.DASH,
                    "× timing p50": fmt.num(profile_ratio(r, s), ".2f"), "steps": s.get("steps", 0)})
    return pd.DataFrame(out)


def top_ops_frame(summary: dict, n: int = TOP_ROWS) -> pd.DataFrame:
    step = summary.get("step_ms_mean") or 0.0

    def share(ms: float) -> str:
        return fmt.num(ms / step * 100 if step else None, ".1f")

    rows = [{"kind": "op", "name": name, "calls/step": fmt.num(v.get("calls"), ".0f"),
             "self ms/step": fmt.num(v.get("self_ms"), ".3f"), "total ms/step": fmt.num(v.get("total_ms"), ".3f"),
             "% of step": share(v.get("self_ms", 0))}
            for name, v in top_ops(summary, n)]
    # a kernel has no children: its own time is its total time
    rows += [{"kind": "kernel", "name": name, "calls/step": fmt.num(v.get("calls"), ".0f"),
              "self ms/step": fmt.num(v.get("total_ms"), ".3f"), "total ms/step": fmt.num(v.get("total_ms"), ".3f"),
              "% of step": share(v.get("total_ms", 0))}
             for name, v in top_kernels(summary, n)]
    return pd.DataFrame(rows)


def cprofile_frame(data: dict, n: int = TOP_ROWS) -> pd.DataFrame:
    rows = []
    for r in data.get("by_tottime", [])[:n]:
        where = f"{Path(r['file']).name}:{r['line']}" if r.get("line") else r.get("file", "")
        rows.append({"function": r["function"], "where": where,
                     "calls/step": fmt.num(r["ncalls"] / max(data.get("steps", 1), 1), ".0f"),
                     "own ms/step": fmt.num(r["tottime_ms"], ".2f"),
                     "cumulative ms/step": fmt.num(r["cumtime_ms"], ".2f")})
    return pd.DataFrame(rows)


def lines_frame(data: dict, function: str = "train_step", n: int = 6) -> pd.DataFrame:
    for f in data.get("functions", []):
        if f.get("function") == function:
            return pd.DataFrame([{"line": ln["line"], "hits": ln["hits"], "ms/step": fmt.num(ln["ms_per_step"], ".2f"),
                                  "% of function": fmt.num(ln["share"] * 100, ".1f"), "source": ln["source"]}
                                 for ln in f.get("lines", [])[:n]])
    return pd.DataFrame()


def diff_frames(diff: dict, n: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(category changes, op changes) of one stage diff, ms per step."""
    cats = pd.DataFrame([{"category": c, "before ms": fmt.num(v["a_ms"], ".2f"), "after ms": fmt.num(v["b_ms"], ".2f"),
                          "change ms": fmt.num(v["delta_ms"], "+.2f") + ("" if v.get("beyond_noise", True)
                                                                         else " (within noise)")}
                         for c, v in diff["categories"].items() if v["a_ms"] or v["b_ms"]])
    ops = []
    for what in ("faster", "slower", "appeared", "disappeared"):
        items = diff[what]
        for i in items[:n]:
            ops.append({"change": what, "kind": i["kind"], "name": i["name"], "before ms": fmt.num(i["a_ms"], ".3f"),
                        "after ms": fmt.num(i["b_ms"], ".3f"), "change ms": fmt.num(i["delta_ms"], "+.3f"),
                        "calls before→after": f"{i['a_calls']:.0f}→{i['b_calls']:.0f}"})
        if len(items) > n:
            ops.append({"change": what, "kind": "", "name": f"… and {len(items) - n} more", "before ms": "",
                        "after ms": "", "change ms": "", "calls before→after": ""})
    return cats, pd.DataFrame(ops)


def diff_pairs(rows: list[StageResult]) -> list[tuple[StageResult, StageResult]]:
    """Consecutive ok stages of the ladder; each ablation against the full stack it removes from."""
    ladder = [r for r in rows if r.status == "ok" and not is_ablation(r)]
    pairs = list(zip(ladder, ladder[1:]))
    if ladder:
        pairs += [(ladder[-1], r) for r in rows if r.status == "ok" and is_ablation(r)]
    return pairs
