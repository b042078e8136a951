"""Tables built from reports/<run>/results.jsonl alone (rich for the console, CSV and Markdown files)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from study.records import StageResult, read_results, write_atomic


def stage_rows(results: list[StageResult]) -> list[StageResult]:
    """The latest aggregate row of each stage, in ladder order."""
    latest: dict[str, StageResult] = {}
    for r in results:
        if r.kind == "stage":
            latest[r.name] = r
    return sorted(latest.values(), key=lambda r: r.stage)


def _speedup(cur: StageResult, ref: StageResult | None) -> tuple[float, float, float]:
    """Ratio of throughputs and a conservative interval from the two CIs (ends divided crosswise)."""
    if cur is ref:
        return 1.0, 1.0, 1.0
    if ref is None or cur.status != "ok" or ref.status != "ok" or not ref.throughput:
        return float("nan"), float("nan"), float("nan")
    ratio = cur.throughput / ref.throughput
    lo = cur.throughput_ci_low / ref.throughput_ci_high if ref.throughput_ci_high else ratio
    hi = cur.throughput_ci_high / ref.throughput_ci_low if ref.throughput_ci_low else ratio
    return ratio, lo, hi


def ladder_frame(results: list[StageResult]) -> pd.DataFrame:
    rows = stage_rows(results)
    base = next((r for r in rows if r.stage == 0 and r.status == "ok"), None)
    prev_ok: StageResult | None = None
    out = []
    for r in rows:
        vs_prev = _speedup(r, prev_ok)
        vs_base = _speedup(r, base)
        out.append({
            "stage": r.stage,
            "name": r.name,
            "toggles": "+".join(r.stack) or "(baseline)",
            "status": r.status,
            "samples_per_s": r.throughput if r.status == "ok" else None,
            "ci_low": r.throughput_ci_low if r.status == "ok" else None,
            "ci_high": r.throughput_ci_high if r.status == "ok" else None,
            "ci_basis": r.ci_basis,
            "repeats": r.repeats,
            "step_time_p50_ms": r.step_time_p50 * 1000 if r.status == "ok" else None,
            "step_time_p90_ms": r.step_time_p90 * 1000 if r.status == "ok" else None,
            "speedup_vs_prev": vs_prev[0],
            "speedup_vs_prev_low": vs_prev[1],
            "speedup_vs_prev_high": vs_prev[2],
            "speedup_vs_base": vs_base[0],
            "speedup_vs_base_low": vs_base[1],
            "speedup_vs_base_high": vs_base[2],
            "data_wait_pct": r.data_wait_share * 100 if r.status == "ok" else None,
            "setup_s": r.setup_seconds if r.status == "ok" else None,
            "warmup_s": r.warmup_seconds if r.status == "ok" else None,
            "peak_mem_mb": r.peak_memory_mb if r.status == "ok" else None,
            "metric_name": r.metric_name,
            "metric": r.metric if r.status == "ok" else None,
            "reason": r.reason or r.error,
        })
        if r.status == "ok" and not r.name.startswith("ablate"):
            prev_ok = r
    return pd.DataFrame(out)


def _fmt_speedup(x: float, lo: float, hi: float) -> str:
    if x != x:  # NaN
        return "–"
    noise = " (noise)" if lo <= 1.0 <= hi else ""
    return f"{x:.2f}× [{lo:.2f}–{hi:.2f}]{noise}"


def display_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The human table: one column per figure a reader compares across stages."""
    def num(v, fmt):
        return "–" if v is None or v != v else format(v, fmt)

    return pd.DataFrame({
        "stage": [f"{s} {n}" for s, n in zip(df.stage, df.name)],
        "toggles": df.toggles,
        "samples/s": [num(v, ".1f") for v in df.samples_per_s],
        "±95% CI": ["–" if v is None or v != v else f"{lo:.1f}–{hi:.1f}"
                    for v, lo, hi in zip(df.samples_per_s, df.ci_low, df.ci_high)],
        "vs prev": [_fmt_speedup(*t) for t in zip(df.speedup_vs_prev, df.speedup_vs_prev_low, df.speedup_vs_prev_high)],
        "vs base": [_fmt_speedup(*t) for t in zip(df.speedup_vs_base, df.speedup_vs_base_low, df.speedup_vs_base_high)],
        "data wait %": [num(v, ".1f") for v in df.data_wait_pct],
        "metric": ["–" if v is None or v != v else f"{m} {v:.3f}" for m, v in zip(df.metric_name, df.metric)],
        "status": [s if not r else f"{s}: {r}" for s, r in zip(df.status, df.reason)],
    })


def to_markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(str(row[c]).replace("|", "\\|").replace("\n", " ") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def print_ladder(df: pd.DataFrame, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    disp = display_frame(df)
    for c in disp.columns:
        table.add_column(c, overflow="fold")
    for _, row in disp.iterrows():
        table.add_row(*[str(row[c]) for c in disp.columns])
    Console().print(table)


def write_ladder(run_dir: Path, print_table: bool = True) -> pd.DataFrame:
    results = read_results(run_dir / "results.jsonl")
    df = ladder_frame(results)
    write_atomic(run_dir / "stages.csv", df.to_csv(index=False))
    write_atomic(run_dir / "stages.md", f"# Ladder: {run_dir.name}\n\n" + to_markdown(display_frame(df)))
    if print_table:
        print_ladder(df, f"study {run_dir.name}")
    return df
