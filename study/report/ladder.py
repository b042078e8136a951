"""The ladder: one row per stage with throughput, speed-ups and their intervals.

`ladder_frame` holds the raw figures (stages.csv); `display_frame` the columns a reader compares
across stages (stages.md, the console, summary.md).
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from study.core.machine_load import is_busy
from study.core.records import StageResult, read_results, write_atomic
from study.core import fmt
from study.report import tables
from study.report.reading import stage_rows
from study.core.stats import stage_speedup


def speedup_of(cur: StageResult, ref: StageResult | None) -> tuple[float, float, float]:
    """Ratio of throughputs with its 95 % interval (paired runs of the same rounds; none for one run):
    study.core.stats.stage_speedup."""
    if cur is ref:
        return 1.0, 1.0, 1.0
    if ref is None or cur.status != "ok" or ref.status != "ok" or not ref.throughput:
        return math.nan, math.nan, math.nan
    return stage_speedup(cur, ref)


# When a stage's figures deserve a second look (torch.utils.benchmark.Compare flags noisy rows the
# same way): fewer measured steps than this, or step times whose coefficient of variation is above it.
MIN_MEASURED_STEPS = 5
NOISY_CV = 0.10
# A stage whose last training loss is this many times its first went the wrong way: diverging (--lr) or a
# bug in the loss, labels or transform; a few steps of a large model from scratch can do it too (the dry
# run's ResNet-50 rises before it falls). The sanity check (study/core/sanity.py) tells these apart.
LOSS_RISE = 2.0


def checks(r: StageResult) -> str:
    """What a reader should know before trusting the row; empty when nothing."""
    if r.status != "ok":
        return ""
    found = []
    if r.steps_measured < MIN_MEASURED_STEPS:
        found.append(f"few steps ({r.steps_measured} measured)")
    if r.step_time_cv > NOISY_CV:
        found.append(f"noisy (step time CV {r.step_time_cv * 100:.0f}%)")
    if is_busy(r.foreign_cpu_share):
        found.append(f"busy machine (others used {r.foreign_cpu_share * 100:.0f}% of the CPU time)")
    if r.notes.get("foreign_gpu_processes", 0) > 0:
        found.append(f"shared GPU ({r.notes['foreign_gpu_processes']} other processes computed on it)")
    if r.notes.get("script_frozen"):
        found.append("traced with frozen control flow (TracerWarning): it may time another computation")
    if r.steady is False:
        found.append("not steady (the measured steps' second half differs from the first beyond noise)")
    if r.diverged_step >= 0:
        found.append(f"diverged: loss not finite from step {r.diverged_step} (lower --lr; amp=fp16 needs its "
                     f"scaler; clip gradients); its speed is no gain")
    elif not math.isfinite(r.final_loss):
        found.append(f"loss {r.final_loss} at the end")
    elif r.first_loss > 0 and r.final_loss > LOSS_RISE * r.first_loss:
        found.append(f"loss rose {r.first_loss:.2f} → {r.final_loss:.2f}")
    return "; ".join(found)


def is_ablation(r: StageResult) -> bool:
    return r.name.startswith("ablate")


def ladder_frame(results: list[StageResult]) -> pd.DataFrame:
    rows = stage_rows(results)
    base = next((r for r in rows if r.stage == 0 and r.status == "ok"), None)
    prev_ok: StageResult | None = None
    out = []
    for r in rows:
        vs_prev = speedup_of(r, prev_ok)
        vs_base = speedup_of(r, base)
        ok = r.status == "ok"
        out.append({
            "stage": r.stage,
            "name": r.name,
            "toggles": "+".join(r.stack) or "(baseline)",
            "status": r.status,
            "samples_per_s": r.throughput if ok else None,
            "ci_low": r.throughput_ci_low if ok else None,
            "ci_high": r.throughput_ci_high if ok else None,
            "ci_basis": r.ci_basis,
            "repeats": r.repeats,
            "processes": r.world_size,
            "nodes": r.nodes,
            "threads": r.threads,
            "step_time_p50_ms": r.step_time_p50 * 1000 if ok else None,
            "step_time_p90_ms": r.step_time_p90 * 1000 if ok else None,
            "steps_measured": r.steps_measured if ok else None,
            "step_time_cv": r.step_time_cv if ok else None,
            "checks": checks(r),
            "speedup_vs_prev": vs_prev[0],
            "speedup_vs_prev_low": vs_prev[1],
            "speedup_vs_prev_high": vs_prev[2],
            "speedup_vs_base": vs_base[0],
            "speedup_vs_base_low": vs_base[1],
            "speedup_vs_base_high": vs_base[2],
            "data_wait_pct": r.data_wait_share * 100 if ok else None,
            "setup_s": r.setup_seconds if ok else None,
            "warmup_s": r.warmup_seconds if ok else None,
            "peak_mem_mb": r.peak_memory_mb if ok else None,
            "metric_name": r.metric_name,
            "metric": r.metric if ok else None,
            "until": (r.notes.get("until") or {}).get("target", ""),
            "time_to_target_s": r.time_to_target_s if ok and r.time_to_target_s >= 0 else None,
            "steps_to_target": r.steps_to_target if ok and r.steps_to_target >= 0 else None,
            "reason": r.reason or r.error,
        })
        if ok and not is_ablation(r):
            prev_ok = r
    return pd.DataFrame(out)


def to_target(until: str, seconds: float | None, steps: float | None, status: str) -> str:
    if status != "ok" or not until:
        return fmt.DASH
    return "not reached" if fmt.missing(seconds) else f"{seconds:.1f} s ({int(steps)} steps)"


def display_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The human table: one column per figure a reader compares across stages (time to target only
    when the run was given one)."""
    extra = {}
    if "until" in df and df.until.astype(bool).any():
        target = next(u for u in df.until if u)
        extra[f"to {target}"] = [to_target(u, t, n, st) for u, t, n, st in
                                 zip(df.until, df.time_to_target_s, df.steps_to_target, df.status)]
    return pd.DataFrame({
        "stage": [f"{s} {n}" for s, n in zip(df.stage, df.name)],
        "toggles": df.toggles,
        "samples/s": [fmt.num(v, ".1f") for v in df.samples_per_s],
        "±95% CI": [fmt.DASH if fmt.missing(v) else fmt.ONE_RUN if basis == "steps" else fmt.interval(lo, hi)
                    for v, lo, hi, basis in zip(df.samples_per_s, df.ci_low, df.ci_high, df.ci_basis)],
        "vs prev": [fmt.speedup(*t) for t in zip(df.speedup_vs_prev, df.speedup_vs_prev_low, df.speedup_vs_prev_high)],
        "vs base": [fmt.speedup(*t) for t in zip(df.speedup_vs_base, df.speedup_vs_base_low, df.speedup_vs_base_high)],
        **extra,
        "data wait %": [fmt.num(v, ".1f") for v in df.data_wait_pct],
        # DDP/hogwild split the cores between processes: a reader comparing stages must see it
        "procs×threads": [(f"{n} nodes × {p // n}×{t}" if n > 1 else f"{p}×{t}") if st == "ok" and t else fmt.DASH
                          for p, n, t, st in zip(df.processes, df.nodes, df.threads, df.status)],
        "metric": [fmt.metric(m, v) for m, v in zip(df.metric_name, df.metric)],
        "status": [s if not r else f"{s}: {r}" for s, r in zip(df.status, df.reason)],
        "check": [c or fmt.DASH for c in df.checks],
    })


def ladder_text(df: pd.DataFrame) -> str:
    """One sentence on the full stack against the baseline; empty with fewer than two ok stages."""
    ok = df[df.status == "ok"]
    if len(ok) < 2:
        return ""
    last = ok.iloc[-1]
    return (f"Full stack ({last['name']}): {fmt.num(last.samples_per_s, '.1f')} samples/s, "
            f"{fmt.speedup(last.speedup_vs_base, last.speedup_vs_base_low, last.speedup_vs_base_high)} "
            "vs the baseline. "
            "Speed-ups whose interval contains 1.0 are marked (noise); a stage timed once has no interval.")


def write_ladder(run_dir: Path, print_table: bool = True) -> pd.DataFrame:
    """stages.csv (raw figures) and stages.md (the human table) of a run; the table on the console."""
    df = ladder_frame(read_results(run_dir / "results.jsonl"))
    write_atomic(run_dir / "stages.csv", tables.csv(df))
    shown = display_frame(df)
    write_atomic(run_dir / "stages.md", f"# Ladder: {run_dir.name}\n\n" + tables.markdown(shown))
    if print_table:
        # On a terminal a reason wrapped inside the status cell runs down a dozen lines: the cell says
        # the status, the reasons follow the table in full (stages.md keeps them in the cell).
        from rich.markup import escape  # errors hold brackets: "[Errno 104]", "[gloo]"

        view = shown.assign(status=list(df.status))
        console = tables.make_console()
        tables.print_table(console, view, f"study {run_dir.name}")
        for _, r in df[df.status != "ok"].iterrows():
            if r.reason:
                console.print(f"  {r['name']} {r.status}: {escape(' '.join(str(r.reason).split()))}",
                              soft_wrap=True)
    return df
