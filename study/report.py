"""Tables, plots and summaries built from reports/<run>/results.jsonl and the run's profile files.

`write_ladder` writes the ladder table (stages.csv/stages.md, rich on the console); `build_report`
writes reports/<run>/summary.md + summary.html + PNGs (phases, MFU, trace categories, stage diffs,
top functions, training curves) and, given two runs, reports/compare-<A>-vs-<B>/. Nothing is
measured here: every figure comes from results.jsonl or a profile file whose path a row records.
"""
from __future__ import annotations

import html as _html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
            "processes": r.world_size,
            "threads": r.threads,
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


def make_console(stderr: bool = False):
    """Rich console; when output is not a terminal (CI, a log file) tables get 160 columns, not 80."""
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)


def _fmt_speedup(x: float, lo: float, hi: float) -> str:
    if x != x:  # NaN
        return "–"
    if lo == hi == x:  # the reference itself
        return f"{x:.2f}×"
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
        # DDP/hogwild split the cores between processes: a reader comparing stages must see it
        "procs×threads": [f"{p}×{t}" if st == "ok" and t else "–"
                          for p, t, st in zip(df.processes, df.threads, df.status)],
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
    from rich.table import Table

    table = Table(title=title)
    disp = display_frame(df)
    for c in disp.columns:
        table.add_column(c, overflow="fold")
    for _, row in disp.iterrows():
        table.add_row(*[str(row[c]) for c in disp.columns])
    make_console().print(table)


def write_ladder(run_dir: Path, print_table: bool = True) -> pd.DataFrame:
    results = read_results(run_dir / "results.jsonl")
    df = ladder_frame(results)
    write_atomic(run_dir / "stages.csv", df.to_csv(index=False))
    write_atomic(run_dir / "stages.md", f"# Ladder: {run_dir.name}\n\n" + to_markdown(display_frame(df)))
    if print_table:
        print_ladder(df, f"study {run_dir.name}")
    return df


# === the full report: summary.md / summary.html / PNGs per run, and run-vs-run comparisons =======

PHASE_FIELDS = (("data", "t_data"), ("h2d", "t_h2d"), ("forward", "t_forward"), ("backward", "t_backward"),
                ("optimizer", "t_optimizer"))
TOP_ROWS = 8


def _num(v: Any, fmt: str, dash: str = "–") -> str:
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return dash
    return format(v, fmt)


def _si(v: float, unit: str) -> str:
    if not v:
        return "–"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.2f} {prefix}{unit}"
    return f"{v:.2f} {unit}"


# --- the document model: one list of blocks, rendered to Markdown and to HTML -------------------

@dataclass
class Doc:
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, df: pd.DataFrame) -> None:
        if df is not None and len(df):
            self.blocks.append(("table", df))

    def image(self, rel: str, alt: str) -> None:
        self.blocks.append(("img", (rel, alt)))

    def pre(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def links(self, items: list[tuple[str, str]]) -> None:
        if items:
            self.blocks.append(("links", items))

    def markdown(self) -> str:
        out = [f"# {self.title}\n"]
        for kind, v in self.blocks:
            if kind == "h":
                out.append(f"{'#' * v[0]} {v[1]}\n")
            elif kind == "p":
                out.append(v + "\n")
            elif kind == "table":
                out.append(to_markdown(v))
            elif kind == "img":
                out.append(f"![{v[1]}]({v[0]})\n")
            elif kind == "pre":
                out.append("```\n" + v.rstrip() + "\n```\n")
            elif kind == "links":
                out.append("\n".join(f"- [{label}]({href})" for label, href in v) + "\n")
        return "\n".join(out)

    def html(self) -> str:
        e = _html.escape
        out = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{e(self.title)}</title>",
               "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
               "table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.2em}"
               "td,th{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}"
               "th{background:#f3f3f3}pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:12px}"
               "img{max-width:100%;border:1px solid #eee;margin:.3em 0}</style></head><body>",
               f"<h1>{e(self.title)}</h1>"]
        for kind, v in self.blocks:
            if kind == "h":
                out.append(f"<h{v[0]}>{e(v[1])}</h{v[0]}>")
            elif kind == "p":
                out.append(f"<p>{e(v)}</p>")
            elif kind == "table":
                out.append(v.to_html(index=False, escape=True, border=0))
            elif kind == "img":
                out.append(f"<p><img src='{e(v[0])}' alt='{e(v[1])}'></p>")
            elif kind == "pre":
                out.append(f"<pre>{e(v)}</pre>")
            elif kind == "links":
                out.append("<ul>" + "".join(f"<li><a href='{e(h)}'>{e(label)}</a></li>" for label, h in v) + "</ul>")
        out.append("</body></html>")
        return "\n".join(out)

    def write(self, folder: Path) -> tuple[Path, Path]:
        md, page = folder / "summary.md", folder / "summary.html"
        write_atomic(md, self.markdown())
        write_atomic(page, self.html())
        return md, page


# --- one run's data ---------------------------------------------------------------------------

class RunData:
    """results.jsonl and the profile files of one run, with paths resolved wherever the study ran."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)
        self.name = self.dir.name
        self.results = read_results(self.dir / "results.jsonl")
        self.stages = stage_rows(self.results)
        try:
            self.config = json.loads((self.dir / "config.json").read_text())
        except (OSError, json.JSONDecodeError):
            self.config = {}
        self._cache: dict[tuple[str, str], Any] = {}

    @property
    def ok(self) -> list[StageResult]:
        return [r for r in self.stages if r.status == "ok"]

    def path(self, row: StageResult, key: str) -> Path | None:
        """A profile file of a stage: as recorded, relative to the cwd, to the reports root's parent,
        or under the run's profiles root (a study run from another directory)."""
        raw = row.profiles.get(key)
        if not raw:
            return None
        p = Path(raw)
        cfg = self.config.get("config", {})
        cands = [p] if p.is_absolute() else [Path.cwd() / p, self.dir.parent.parent / p]
        root = Path(cfg.get("profiles_root", "profiles")) / self.name / row.name / p.name
        cands += [root, self.dir.parent.parent / root]
        return next((c for c in cands if c.exists()), None)

    def _json(self, row: StageResult, key: str) -> dict | None:
        ck = (row.name, key)
        if ck not in self._cache:
            p = self.path(row, key)
            try:
                self._cache[ck] = json.loads(p.read_text()) if p else None
            except (OSError, json.JSONDecodeError):
                self._cache[ck] = None
        return self._cache[ck]

    def trace_summary(self, row: StageResult) -> dict | None:
        ck = (row.name, "trace_summary+trace")
        if ck not in self._cache:
            s = self._json(row, "trace_summary")
            trace = self.path(row, "torch_trace")
            if s is None and trace is not None:  # summary missing: read the trace itself
                from study.profiling.trace_summary import summarize

                try:
                    s = summarize(trace)
                except (OSError, ValueError, json.JSONDecodeError):
                    s = None
            self._cache[ck] = s
        return self._cache[ck]

    def cprofile(self, row: StageResult) -> dict | None:
        return self._json(row, "cprofile_json")

    def lines(self, row: StageResult) -> dict | None:
        return self._json(row, "lines_json")

    def losses(self, row: StageResult) -> list[float]:
        """Training loss per step from the stage's seed records (type-2 rows, value1), repeat 0."""
        import csv

        p = self.dir / "stages" / row.name / "records-r0.csv"
        if not p.exists():
            return []
        out = []
        with open(p, newline="") as fh:
            for rec in csv.DictReader(fh):
                if rec.get("type") == "2":
                    try:
                        out.append(float(rec["value1"]))
                    except (KeyError, ValueError):
                        pass
        return out

    def worker_sweep(self) -> list[dict]:
        p = self.dir / "worker_sweep.json"
        try:
            rows = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return []
        return [r for r in rows if isinstance(r, dict) and "workers" in r and "samples_per_s" in r]


# --- frames -----------------------------------------------------------------------------------

def phase_frame(rows: list[StageResult]) -> pd.DataFrame:
    """Mean ms per step in each phase of the timing pass."""
    out = []
    for r in rows:
        if r.status != "ok":
            continue
        ms = {p: getattr(r, f) * 1000 for p, f in PHASE_FIELDS}
        total = sum(ms.values())
        out.append({"stage": r.name, **{f"{p} ms": _num(v, ".2f") for p, v in ms.items()},
                    "step ms": _num(total, ".2f"), "data wait %": _num(r.data_wait_share * 100, ".1f")})
    return pd.DataFrame(out)


def mfu_frame(rows: list[StageResult]) -> pd.DataFrame:
    out = []
    for r in rows:
        if r.status != "ok":
            continue
        achieved = r.flops_per_sample * r.throughput
        mfu = r.mfu or (achieved / r.peak_flops if r.peak_flops else 0.0)
        out.append({"stage": r.name, "FLOPs/sample": _si(r.flops_per_sample, "FLOP"),
                    "achieved": _si(achieved, "FLOP/s"), "peak": _si(r.peak_flops, "FLOP/s"),
                    "MFU %": _num(mfu * 100, ".2f") if mfu else "–", "peak source": r.peak_flops_source or "–"})
    return pd.DataFrame(out)


def quality_frame(rows: list[StageResult]) -> pd.DataFrame:
    out = []
    for r in rows:
        if r.status != "ok":
            continue
        extra = ", ".join(f"{k} {v:.3f}" for k, v in sorted(r.metrics.items()) if isinstance(v, (int, float)))
        out.append({"stage": r.name, r.metric_name or "metric": _num(r.metric, ".3f"),
                    "final loss": _num(r.final_loss, ".4f"), "steps": r.steps_total, "all metrics": extra or "–",
                    "peak mem MB": _num(r.peak_memory_mb, ".0f"), "memory": r.memory_kind})
    return pd.DataFrame(out)


def category_frame(run: RunData, rows: list[StageResult]) -> pd.DataFrame:
    from study.profiling.trace_summary import CATEGORIES

    summaries = [(r, run.trace_summary(r)) for r in rows]
    summaries = [(r, s) for r, s in summaries if s]
    # Categories with no time in any stage (no GPU: kernel, memcpy, ...) are left out.
    used = [c for c in CATEGORIES if any(s.get("categories_ms", {}).get(c, 0.0) > 0 for _, s in summaries)]
    out = []
    for r, s in summaries:
        cats = s.get("categories_ms", {})
        loop = s.get("loop_step_ms") or []
        out.append({"stage": r.name, **{c: _num(cats.get(c, 0.0), ".2f") for c in used},
                    "sum ms": _num(sum(cats.values()), ".2f"), "profiled step ms": _num(s.get("step_ms_mean"), ".2f"),
                    "loop step ms": _num(sum(loop) / len(loop), ".2f") if loop else "–",
                    "× timing p50": _num(_profile_ratio(r, s), ".2f"), "steps": s.get("steps", 0)})
    return pd.DataFrame(out)


UNREPRESENTATIVE = 2.0  # profiled steps this many times slower than the timing pass's median


def _profile_ratio(r: StageResult, summary: dict) -> float | None:
    """Profiled step time ÷ the timing pass's median step: profiler overhead plus whatever else the
    machine did meanwhile. Far above 1, the profile does not show the measured stage."""
    if not r.step_time_p50 or not summary.get("step_ms_mean"):
        return None
    return summary["step_ms_mean"] / (r.step_time_p50 * 1000)


def top_ops_frame(summary: dict, n: int = TOP_ROWS) -> pd.DataFrame:
    from study.profiling.trace_summary import top_kernels, top_ops

    step = summary.get("step_ms_mean") or 0.0
    rows = [{"kind": "op", "name": name, "calls/step": _num(v.get("calls"), ".0f"),
             "self ms/step": _num(v.get("self_ms"), ".3f"), "total ms/step": _num(v.get("total_ms"), ".3f"),
             "% of step": _num(v.get("self_ms", 0) / step * 100 if step else None, ".1f")}
            for name, v in top_ops(summary, n)]
    rows += [{"kind": "kernel", "name": name, "calls/step": _num(v.get("calls"), ".0f"),
              "self ms/step": _num(v.get("total_ms"), ".3f"), "total ms/step": _num(v.get("total_ms"), ".3f"),
              "% of step": _num(v.get("total_ms", 0) / step * 100 if step else None, ".1f")}
             for name, v in top_kernels(summary, n)]
    return pd.DataFrame(rows)


def cprofile_frame(data: dict, n: int = TOP_ROWS) -> pd.DataFrame:
    rows = []
    for r in data.get("by_tottime", [])[:n]:
        where = f"{Path(r['file']).name}:{r['line']}" if r.get("line") else r.get("file", "")
        rows.append({"function": r["function"], "where": where,
                     "calls/step": _num(r["ncalls"] / max(data.get("steps", 1), 1), ".0f"),
                     "own ms/step": _num(r["tottime_ms"], ".2f"), "cumulative ms/step": _num(r["cumtime_ms"], ".2f")})
    return pd.DataFrame(rows)


def lines_frame(data: dict, function: str = "train_step", n: int = 6) -> pd.DataFrame:
    for f in data.get("functions", []):
        if f.get("function") == function:
            return pd.DataFrame([{"line": ln["line"], "hits": ln["hits"], "ms/step": _num(ln["ms_per_step"], ".2f"),
                                  "% of function": _num(ln["share"] * 100, ".1f"), "source": ln["source"]}
                                 for ln in f.get("lines", [])[:n]])
    return pd.DataFrame()


def diff_frames(diff: dict, n: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(category changes, op changes) of one stage diff, ms per step."""
    cats = pd.DataFrame([{"category": c, "before ms": _num(v["a_ms"], ".2f"), "after ms": _num(v["b_ms"], ".2f"),
                          "change ms": _num(v["delta_ms"], "+.2f")}
                         for c, v in diff["categories"].items() if v["a_ms"] or v["b_ms"]])
    ops = []
    for what in ("faster", "slower", "appeared", "disappeared"):
        items = diff[what]
        for i in items[:n]:
            ops.append({"change": what, "kind": i["kind"], "name": i["name"], "before ms": _num(i["a_ms"], ".3f"),
                        "after ms": _num(i["b_ms"], ".3f"), "change ms": _num(i["delta_ms"], "+.3f"),
                        "calls before→after": f"{i['a_calls']:.0f}→{i['b_calls']:.0f}"})
        if len(items) > n:
            ops.append({"change": what, "kind": "", "name": f"… and {len(items) - n} more", "before ms": "",
                        "after ms": "", "change ms": "", "calls before→after": ""})
    return cats, pd.DataFrame(ops)


def diff_pairs(rows: list[StageResult]) -> list[tuple[StageResult, StageResult]]:
    """Consecutive ok stages of the ladder; each ablation against the full stack it removes from."""
    ladder = [r for r in rows if r.status == "ok" and not r.name.startswith("ablate")]
    pairs = list(zip(ladder, ladder[1:]))
    if ladder:
        pairs += [(ladder[-1], r) for r in rows if r.status == "ok" and r.name.startswith("ablate")]
    return pairs


# --- rendering one run ------------------------------------------------------------------------

def _rel(target: Path, start: Path) -> str:
    return os.path.relpath(target.resolve(), start.resolve()).replace(os.sep, "/")


def _ladder_text(df: pd.DataFrame) -> str:
    ok = df[df.status == "ok"]
    if len(ok) < 2:
        return ""
    last = ok.iloc[-1]
    return (f"Full stack ({last['name']}): {last.samples_per_s:.1f} samples/s, "
            f"{_fmt_speedup(last.speedup_vs_base, last.speedup_vs_base_low, last.speedup_vs_base_high)} "
            "vs the baseline. "
            "Speed-ups whose interval contains 1.0 are marked (noise).")


def run_report(run_dir: Path) -> tuple[Doc, dict[str, Any]]:
    """The Doc of one run plus what the console shows; writes the run's PNGs."""
    from study import plots

    run = RunData(run_dir)
    rows = run.stages
    df = ladder_frame(run.results)
    first = rows[0] if rows else None
    doc = Doc(f"study {run.name}")
    if first:
        doc.para(f"{first.task} · model {first.model} · data {first.dataset} · batch {first.batch_size}/process · "
                 f"device {first.device_name or first.device or '?'} · torch {first.versions.get('torch', '?')} · "
                 f"git {first.git_sha or '?'}. Every figure below comes from results.jsonl or a profile file "
                 f"of this run.")
    doc.heading("Ladder")
    doc.table(display_frame(df) if len(df) else df)
    summary_line = _ladder_text(df) if len(df) else ""
    if summary_line:
        doc.para(summary_line)
    labels = [r.name for r in rows]
    p = plots.throughput(labels, [r.throughput if r.status == "ok" else None for r in rows],
                         [r.throughput_ci_low if r.status == "ok" else None for r in rows],
                         [r.throughput_ci_high if r.status == "ok" else None for r in rows],
                         run.dir / "throughput.png", f"{run.name}: throughput per stage",
                         missing=[r.status for r in rows])
    if p:
        doc.image(p.name, "throughput per stage with 95% CI")

    ok = run.ok
    doc.heading("Where a step's time goes (timing pass)")
    doc.para("Mean milliseconds per measured step in each phase of the one training loop (warm-up excluded). "
             "Data wait is time blocked in next(loader): the figure workers/pin should shrink.")
    phases = phase_frame(rows)
    doc.table(phases)
    p = plots.stacked([r.name for r in ok], {ph: [getattr(r, f) * 1000 for r in ok] for ph, f in PHASE_FIELDS},
                      run.dir / "phases.png", f"{run.name}: phase breakdown")
    if p:
        doc.image(p.name, "phase breakdown per stage")

    doc.heading("Model FLOPs utilization")
    doc.para("FLOPs per sample counted once per stage (FlopCounterMode, forward + backward) × throughput ÷ the "
             "devices' peak. CPU peaks are estimates from cores × clock × FLOPs/cycle.")
    mfu = mfu_frame(rows)
    doc.table(mfu)

    doc.heading("Quality")
    doc.table(quality_frame(rows))
    series = {r.name: run.losses(r) for r in ok}
    p = plots.curves(series, run.dir / "curves.png", f"{run.name}: training loss (repeat 0)")
    if p:
        doc.image(p.name, "training loss per step")

    sweep = run.worker_sweep()
    if sweep:
        doc.heading("DataLoader worker sweep")
        doc.table(pd.DataFrame([{"workers": s["workers"], "samples/s": _num(s["samples_per_s"], ".1f")}
                                for s in sweep]))
        p = plots.worker_sweep([s["workers"] for s in sweep], [s["samples_per_s"] for s in sweep],
                               run.dir / "worker_sweep.png", f"{run.name}: worker sweep")
        if p:
            doc.image(p.name, "samples/s per number of workers")

    cats = category_frame(run, ok)
    console: dict[str, Any] = {"phases": phases, "mfu": mfu, "categories": cats, "diffs": []}
    if len(cats):
        from study.profiling.trace_summary import CATEGORIES

        doc.heading("Trace: step-time categories (torch.profiler)")
        doc.para("ms per profiled step. Each instant of a step goes to the highest-priority active category "
                 "(kernel > memcpy > memset > communication > runtime > dataloader > cpu_exec > other), so the "
                 "categories add up to the profiled step; categories with no time anywhere are left out. "
                 "'loop step ms' is the loop's own timer in the same steps; '× timing p50' compares the "
                 "profiled step with the timing pass (profiler overhead, or other load on the machine).")
        doc.table(cats)
        odd = [r.name for r in ok if (_profile_ratio(r, run.trace_summary(r) or {}) or 0) > UNREPRESENTATIVE]
        if odd:
            doc.para(f"⚠ profiled steps of {', '.join(odd)} ran more than {UNREPRESENTATIVE:.0f}× slower than "
                     "the timing pass: read their categories, top ops and diffs as that slower run, not as "
                     "the measured stage (more --profile-steps, or a quieter machine).")
        with_trace = [(r.name, run.trace_summary(r) or {}) for r in ok if run.trace_summary(r)]
        p = plots.stacked([n for n, _ in with_trace],
                          {c: [s["categories_ms"].get(c, 0.0) for _, s in with_trace] for c in CATEGORIES},
                          run.dir / "trace_categories.png",
                          f"{run.name}: trace categories")
        if p:
            doc.image(p.name, "trace categories per stage")

    pairs = [(a, b) for a, b in diff_pairs(rows) if run.trace_summary(a) and run.trace_summary(b)]
    if pairs:
        from study.profiling.trace_summary import diff_ops, headline

        doc.heading("What changed between stages (trace diff)")
        doc.para("Per step, from one stage's trace to the next: categories, and operators (self time) or "
                 "device kernels that got faster or slower (by ≥ 10 % and ≥ 0.5 % of the step), appeared or "
                 "disappeared. This is the 'why' of a speed-up.")
        for a, b in pairs:
            d = diff_ops(run.trace_summary(a), run.trace_summary(b))  # type: ignore[arg-type]
            console["diffs"].append((a.name, b.name, headline(d)))
            doc.heading(f"{a.name} → {b.name}", 3)
            doc.para(f"profiled step {d['step_ms'][0]:.2f} → {d['step_ms'][1]:.2f} ms "
                     f"(timing pass p50 {a.step_time_p50 * 1000:.2f} → {b.step_time_p50 * 1000:.2f} ms). "
                     f"{headline(d)}.")
            cat_df, op_df = diff_frames(d)
            doc.table(cat_df)
            doc.table(op_df)

    prof_rows = [r for r in ok if r.profiles]
    if prof_rows:
        doc.heading("Profiles per stage")
        logdir = Path(run.config.get("config", {}).get("profiles_root", "profiles")) / run.name
        doc.para(f"Traces: `tensorboard --logdir {logdir}` "
                 "(PyTorch Profiler tab, one run per stage). Flame graphs: pyspy.svg; speedscope.app opens "
                 "pyspy.speedscope.json; `python -m pstats cprofile.prof` or snakeviz for cProfile.")
        for r in prof_rows:
            doc.heading(r.name, 3)
            links = []
            for key in ("torch_trace", "trace_summary", "cprofile", "cprofile_top", "pyspy_svg", "pyspy_speedscope",
                        "lines"):
                p = run.path(r, key)
                if p:
                    links.append((f"{key}: {p.name}", _rel(p, run.dir)))
            doc.links(links)
            problems = [f"{k}: {v}" for k, v in sorted(r.profiles.items()) if k.endswith(("_error", "_warning"))]
            for msg in problems:
                doc.para(f"⚠ {msg}")
            s = run.trace_summary(r)
            if s:
                doc.para(f"Top operators by self time (torch.profiler, {s.get('steps', 0)} steps):")
                doc.table(top_ops_frame(s))
            cp = run.cprofile(r)
            if cp:
                doc.para(f"Top Python functions by own time (cProfile, {cp.get('steps', 0)} steps):")
                doc.table(cprofile_frame(cp))
            ln = run.lines(r)
            if ln:
                doc.para("Hottest lines of train_step (line_profiler):")
                doc.table(lines_frame(ln))
    skipped = [r for r in rows if r.status != "ok"]
    if skipped:
        doc.heading("Skipped and failed stages")
        doc.table(pd.DataFrame([{"stage": r.name, "status": r.status, "why": r.reason or r.error} for r in skipped]))
    return doc, console


# --- comparing runs ---------------------------------------------------------------------------

def compare_frame(a: RunData, b: RunData) -> pd.DataFrame:
    rb = {r.name: r for r in b.stages}
    out = []
    for ra in a.stages:
        r2 = rb.get(ra.name)
        if r2 is None:
            continue
        ratio = _speedup(r2, ra)
        ok_a, ok_b = ra.status == "ok", r2.status == "ok"

        def tp(r: StageResult, ok: bool) -> str:
            return f"{r.throughput:.1f} [{r.throughput_ci_low:.1f}–{r.throughput_ci_high:.1f}]" if ok else r.status

        out.append({"stage": ra.name, f"{a.name} samples/s": tp(ra, ok_a), f"{b.name} samples/s": tp(r2, ok_b),
                    f"{b.name}/{a.name}": _fmt_speedup(*ratio),
                    f"{a.name} step ms": _num(ra.step_time_p50 * 1000 if ok_a else None, ".1f"),
                    f"{b.name} step ms": _num(r2.step_time_p50 * 1000 if ok_b else None, ".1f"),
                    f"{a.name} data wait %": _num(ra.data_wait_share * 100 if ok_a else None, ".1f"),
                    f"{b.name} data wait %": _num(r2.data_wait_share * 100 if ok_b else None, ".1f"),
                    f"{a.name} MFU %": _num(ra.mfu * 100 if ok_a and ra.mfu else None, ".2f"),
                    f"{b.name} MFU %": _num(r2.mfu * 100 if ok_b and r2.mfu else None, ".2f"),
                    f"{a.name} metric": f"{ra.metric_name} {ra.metric:.3f}" if ok_a else "–",
                    f"{b.name} metric": f"{r2.metric_name} {r2.metric:.3f}" if ok_b else "–"})
    return pd.DataFrame(out)


def _config_diff(a: RunData, b: RunData) -> pd.DataFrame:
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


def compare_report(dir_a: Path, dir_b: Path) -> tuple[Doc, Path, pd.DataFrame]:
    from study import plots
    from study.profiling.trace_summary import diff_ops, headline

    a, b = RunData(dir_a), RunData(dir_b)
    out_dir = a.dir.parent / f"compare-{a.name}-vs-{b.name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = Doc(f"study: {a.name} vs {b.name}")
    doc.para(f"Stages matched by name. Ratios are {b.name} ÷ {a.name} throughput with an interval from both "
             f"runs' 95% CIs; (noise) when it contains 1.0.")
    cfg = _config_diff(a, b)
    if len(cfg):
        doc.heading("What differs between the runs")
        doc.table(cfg)
    cmp = compare_frame(a, b)
    doc.heading("Stages side by side")
    doc.table(cmp)
    names_b = {r.name for r in b.stages}
    names_a = {r.name for r in a.stages}
    only = [f"only in {a.name}: {r.name}" for r in a.stages if r.name not in names_b]
    only += [f"only in {b.name}: {r.name}" for r in b.stages if r.name not in names_a]
    if only:
        doc.para("; ".join(only))
    shared = [r.name for r in a.stages if r.name in names_b]
    ra, rb = {r.name: r for r in a.stages}, {r.name: r for r in b.stages}

    def tput(rs: dict, n: str) -> float | None:
        return rs[n].throughput if rs[n].status == "ok" else None

    p = plots.grouped(shared, {a.name: [tput(ra, n) for n in shared], b.name: [tput(rb, n) for n in shared]},
                      out_dir / "throughput.png", f"{a.name} vs {b.name}: samples/s")
    if p:
        doc.image(p.name, "throughput side by side")
    phase_rows = []
    for n in shared:
        for run, rs in ((a, ra), (b, rb)):
            r = rs[n]
            if r.status == "ok":
                phase_rows.append({"stage": n, "run": run.name,
                                   **{f"{ph} ms": _num(getattr(r, f) * 1000, ".2f") for ph, f in PHASE_FIELDS}})
    if phase_rows:
        doc.heading("Phases side by side (ms per step)")
        doc.table(pd.DataFrame(phase_rows))
    diffs = []
    for n in shared:
        sa, sb = a.trace_summary(ra[n]), b.trace_summary(rb[n])
        if sa and sb:
            diffs.append({"stage": n, f"{a.name} step ms": _num(sa["step_ms_mean"], ".2f"),
                          f"{b.name} step ms": _num(sb["step_ms_mean"], ".2f"),
                          "what changed": headline(diff_ops(sa, sb))})
    if diffs:
        doc.heading(f"Trace diff per stage ({a.name} → {b.name})")
        doc.table(pd.DataFrame(diffs))
    doc.links([(f"{a.name} summary", _rel(a.dir / "summary.md", out_dir)),
               (f"{b.name} summary", _rel(b.dir / "summary.md", out_dir))])
    return doc, out_dir, cmp


# --- entry point ------------------------------------------------------------------------------

def _print_frame(console: Any, df: pd.DataFrame, title: str) -> None:
    from rich.table import Table

    if df is None or not len(df):
        return
    table = Table(title=title)
    for c in df.columns:
        table.add_column(str(c), overflow="fold")
    for _, row in df.iterrows():
        table.add_row(*[str(row[c]) for c in df.columns])
    console.print(table)


def build_report(run_dirs: list[Path], print_tables: bool = True) -> list[Path]:
    """summary.md, summary.html and PNGs for each run; with two or more runs, the first compared with
    each other one under reports/compare-<A>-vs-<B>/. Returns the summary.md paths written."""
    console = make_console(stderr=True) if print_tables else None
    written: list[Path] = []
    for d in run_dirs:
        doc, shown = run_report(Path(d))
        md, page = doc.write(Path(d))
        written.append(md)
        if console is not None:
            cols = ["stage", "data ms", "h2d ms", "forward ms", "backward ms", "optimizer ms", "step ms"]
            ph = shown["phases"]
            if len(ph):
                merged = ph[cols]
                if len(shown["mfu"]):
                    merged = merged.merge(shown["mfu"][["stage", "MFU %"]], on="stage", how="left")
                _print_frame(console, merged, f"{Path(d).name}: phases (timing pass) and MFU")
            if len(shown["categories"]):
                _print_frame(console, shown["categories"], f"{Path(d).name}: trace categories, ms/step")
            for a, b, line in shown["diffs"]:
                console.print(f"  [bold]{a} → {b}[/]: {line}")
            console.print(f"summary: {md}  {page}")
    for other in run_dirs[1:]:
        doc, out_dir, cmp = compare_report(Path(run_dirs[0]), Path(other))
        md, page = doc.write(out_dir)
        written.append(md)
        if console is not None:
            _print_frame(console, cmp.iloc[:, :4] if len(cmp) else cmp,
                         f"{Path(run_dirs[0]).name} vs {Path(other).name}")
            console.print(f"comparison: {md}  {page}")
    return written
