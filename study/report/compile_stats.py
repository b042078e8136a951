"""The torch.compile section: what compile cost and what it could not capture, per compile stage, and
whether its warm-up paid back."""
from __future__ import annotations

from optimizations.base import toggle_name
from study.core import fmt
from study.report.doc import Part
from study.report.ladder import is_ablation, speedup_of
from study.report.reading import RunData


def compile_stats(run: RunData) -> Part:
    """What torch.compile cost and could not capture, per compile stage of the ladder."""
    part = Part()
    rows = []
    stages = [r for r in run.ok if isinstance(r.notes.get("compile_stats"), dict)]
    prev = {}
    ladder = [r for r in run.ok if not is_ablation(r)]
    for a, b in zip(ladder, ladder[1:]):
        prev[b.name] = a
    for r in stages:
        cs = r.notes["compile_stats"]
        rows.append({"stage": r.name, "mode": str(r.notes.get("compile", "")).split(";")[0].removeprefix("mode="),
                     "compile s": fmt.num(cs.get("seconds"), ".1f"), "warm-up s": fmt.num(r.warmup_seconds, ".1f"),
                     "graphs": cs.get("graphs", 0), "graph breaks": cs.get("graph_breaks", 0),
                     "recompiles": cs.get("recompiles", 0),
                     "first reasons": "; ".join([*cs.get("graph_break_reasons", []), *cs.get("recompile_reasons", [])])
                     or fmt.DASH,
                     "cache hits/misses": f"{cs.get('cache_hits', 0)}/{cs.get('cache_misses', 0)}"})
    if not rows:
        return part
    part.heading("torch.compile: what it cost and what it could not capture")
    part.para("Compile seconds are Dynamo + Inductor for every graph (training, backward, evaluation), most of it "
              "in the excluded warm-up steps; a graph break splits the model into separately compiled pieces with "
              "Python between them; a recompile after the warm-up (evaluation mode, a last smaller batch) costs "
              "compile time again. Cache hits: graphs Inductor loaded from its on-disk cache instead of compiling.")
    part.table(rows)
    for r in stages:
        p = prev.get(r.name)
        if p is None or not (r.stack and toggle_name(r.stack[-1]) == "compile"):
            continue  # a later stage carries compile's stats too; its line speaks of its own toggle
        ratio, lo, hi = speedup_of(r, p)
        saved = p.step_time_p50 - r.step_time_p50
        if lo > 1.0 and saved > 0:
            steps = r.warmup_seconds / saved
            part.para(f"{r.name}: {fmt.speedup(ratio, lo, hi)} vs {p.name}; its {fmt.num(r.warmup_seconds, '.1f')} s "
                      f"of warm-up pay back after about {fmt.num(steps, ',.0f')} steps at "
                      f"{fmt.num(saved * 1000, '.1f')} ms saved per step.")
        else:
            part.para(f"{r.name}: {fmt.speedup(ratio, lo, hi)} vs {p.name}: compile did not pay here "
                      f"({r.notes['compile_stats'].get('graph_breaks', 0)} graph breaks, "
                      f"{r.notes['compile_stats'].get('recompiles', 0)} recompiles).")
    return part
