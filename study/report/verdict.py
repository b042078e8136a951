"""The answer sections: the verdict at the top, the search table, bottlenecks and advice per stage,
and what torch.compile did.

Findings and advice come from study.advice (one table of rules); here they become sentences, each
quoting the figure of results.jsonl (or of the profile a row points to) that it rests on.
"""
from __future__ import annotations

import math
import re
from typing import Any

from optimizations.base import how_of
from study.advice import (RULES, Advice, Finding, Measured, StageVerdict, evidence_of, figures, ladder_measurements,
                          refutations, stage_verdict, verdict_from_record)
from study.core.machine import Env
from study.core.machine_load import is_busy
from study.core import sanity
from study.core.records import StageResult
from study.core import fmt
from study.report.doc import Part
from study.report.ladder import is_ablation, speedup_of
from study.report.reading import RunData
from study.report.target import target_of, time_to_target_lines
from study.search.notes import ResultNote, RoundNote, RunNote
from study.search import BUSY, CUT, DROPPED, FAILED, FASTER, KEPT, NO_GAIN, NOT_RETRIED, RACE_DROP, RACING, SLOWER

TOP_ADVICE = 3


def pct(v: float | None) -> str:
    return fmt.DASH if v is None else f"{fmt.num(v * 100, '.1f')} %"


def env_of(run: RunData) -> Env:
    """The machine the run measured, as its "run" row records it (older runs: config.json, else guessed
    from the rows)."""
    saved = next((r.notes["env"] for r in reversed(run.results) if r.kind == "run" and isinstance(r.notes.get("env"), dict)),
                 None) or run.config.get("env") or {}
    try:
        return Env(device_type=saved["device_type"], cuda_count=int(saved.get("cuda_count", 0)),
                   cpu_count=int(saved.get("cpu_count", 1)), bf16_native=bool(saved.get("bf16_native", False)))
    except (KeyError, TypeError, ValueError):
        first = run.stages[0] if run.stages else None
        cuda = bool(first and str(first.device).startswith("cuda"))
        cores = re.search(r"\((\d+) cores\)", first.device_name if first else "")
        return Env(device_type="cuda" if cuda else "cpu", cuda_count=1 if cuda else 0,
                   cpu_count=int(cores.group(1)) if cores else 1)


# --- the search's rows ---------------------------------------------------------------------------


def search_rows(run: RunData) -> list[StageResult]:
    """Each round's table rows (kind "search"), the latest row of each (round, candidate)."""
    latest: dict[tuple[int, str, str], StageResult] = {}
    for r in run.results:
        s = RoundNote.of(r)
        if s is not None:
            latest[(int(s.round), s.role, s.candidate)] = r
    return sorted(latest.values(), key=lambda r: r.stage)


def search_result(run: RunData) -> StageResult | None:
    rows = [r for r in run.results if r.kind == "search-result"]
    return rows[-1] if rows else None


def search_measurements(run: RunData) -> list[Measured]:
    out = []
    for r in search_rows(run):
        s = RoundNote.of(r)
        if s.role == "candidate" and s.pairs:
            where = f"search round {s.round} (on {'+'.join(s.incumbent) or 'the baseline'})"
            out.append(Measured(s.candidate, where, s.speedup, s.speedup_low, s.speedup_high))
    return out


def first_run_notes(run: RunData, round_no: int, spec: str) -> dict:
    """Notes of a search candidate's first run (compile stages carry compile_stats there)."""
    for r in run.results:
        s = RunNote.of(r)
        if s is not None and s.round == round_no and s.candidate == spec and r.status == "ok":
            return r.notes
    return {}


# --- verdicts per stage --------------------------------------------------------------------------


def verdicts(run: RunData) -> dict[str, StageVerdict]:
    """Findings and advice of every ok ladder stage, refuted advice marked from the ladder and search:
    as the run recorded them when it ended (kind "verdict"), else (older runs) decided now."""
    recorded = {r.name: r for r in run.results if r.kind == "verdict" and isinstance(r.notes.get("verdict"), dict)}
    out = {}
    for r in run.ok:
        rec = recorded.get(r.name)
        if rec is not None and rec.config_hash == r.config_hash:
            out[r.name] = verdict_from_record(rec.notes["verdict"])
    missing = [r for r in run.ok if r.name not in out]
    if missing:
        env = env_of(run)
        refuted = refutations([*ladder_measurements(run.stages), *search_measurements(run)])
        for r in missing:
            out[r.name] = stage_verdict(evidence_of(r, run.trace_summary(r), run.cprofile(r)), env, refuted)
    return {r.name: out[r.name] for r in run.ok}


def decide_verdicts(run: RunData) -> dict[str, StageVerdict]:
    """What a run records when it ends: every ok stage's verdict decided now, on this machine."""
    env = env_of(run)
    refuted = refutations([*ladder_measurements(run.stages), *search_measurements(run)])
    return {r.name: stage_verdict(evidence_of(r, run.trace_summary(r), run.cprofile(r)), env, refuted)
            for r in run.ok}


def finding_text(f: Finding) -> str:
    return (f"{f.rule.bottleneck}: {f.rule.figure} {pct(f.value)} ({f.rule.source}; the rule fires at "
            f"{pct(f.rule.threshold)})")


def refuted_text(m: Measured) -> str:
    return f"measured without gain in {m.where}: {fmt.speedup(m.ratio, m.low, m.high)}"


def advice_text(a: Advice) -> str:
    f = a.finding
    ceiling = f" — up to {fmt.num(f.ceiling, '.2f')}× if that share vanished" if f.ceiling else ""
    text = f"{a.toggle}: {a.reason} ({f.rule.bottleneck}, {f.rule.figure} {pct(f.value)}{ceiling})"
    return text + (f"; but {refuted_text(a.refuted)}" if a.refuted else "")


def nothing_fired_text(v: StageVerdict) -> str:
    seen = "; ".join(f"{rule.figure} {pct(value)} (fires at {pct(rule.threshold)})"
                     for rule, value in figures(v.evidence))
    return f"no bottleneck rule fired: {seen or 'no figure the rules read was recorded'}"


# --- sections ------------------------------------------------------------------------------------


def best_ladder_stage(run: RunData) -> tuple[StageResult | None, tuple[float, float, float]]:
    """The fastest ok ladder stage whose speed-up over the baseline lies above 1.0 (None: none did)."""
    base = next((r for r in run.ok if r.stage == 0), None)
    best, best_s = None, (math.nan, math.nan, math.nan)
    for r in run.ok:
        if r is base or is_ablation(r) or r.diverged_step >= 0:  # a stage that diverged trained nothing
            continue
        s = speedup_of(r, base)
        if s[1] > 1.0 and (best is None or r.throughput > best.throughput):
            best, best_s = r, s
    return best, best_s


def slower_lines(ladder: list[StageResult]) -> list[str]:
    """Every stage measured slower than the stage before it beyond noise, with what its toggle recorded
    of itself (bf16 emulated on this CPU, a compile mode), so a slowdown is never left unsaid."""
    out, prev = [], None
    for r in ladder:
        s = speedup_of(r, prev) if prev is not None else (math.nan,) * 3
        if s[2] < 1.0:
            toggle = r.stack[-1].split("=")[0] if r.stack else ""
            own = r.notes.get(toggle)
            why = f"; its toggle noted: {own}" if isinstance(own, str) and own else ""
            out.append(f"Slower beyond noise: {r.name} ({r.stack[-1] if r.stack else 'baseline'}), "
                       f"{fmt.speedup(*s)} the stage before{why}.")
        prev = r
    return out


def script_lines(ladder: list[StageResult]) -> list[str]:
    """TorchScript as this torch sees it: deprecated, with compile as its successor; and a trace that
    froze value-dependent control flow, whose stage may have timed another computation."""
    out = []
    for r in ladder:
        if r.stack and r.stack[-1].split("=")[0] == "script":
            if r.notes.get("script_frozen"):
                out.append(f"{r.name}: the trace froze value-dependent Python ({r.notes['script_frozen']}); its "
                           f"figures may be another computation's.")
            if r.notes.get("script_deprecation"):
                out.append(f"{r.name}: TorchScript is deprecated in this torch ({r.notes['script_deprecation']}); "
                           f"compile is its successor: try --stack compile.")
    return out


def verdict(run: RunData) -> Part:
    """At the top: whether the pipeline learns (the sanity check), the best stack and its speed-up, what
    limits it now, what to try next."""
    part = Part()
    checked = sanity.line(sanity.latest(run.results))  # first: do the figures below come from a pipeline that learns?
    if not run.ok and not checked:
        return part
    part.heading("Verdict")
    lines: list[str] = [checked] if checked else []
    if not run.ok:
        for line in lines:
            part.para(line)
            part.show_closing(line)
        return part
    found = search_result(run)
    ladder = [r for r in run.ok if not is_ablation(r)]
    if found is not None:
        s = ResultNote.of(found) or ResultNote()
        best = "+".join(found.stack)
        if best:
            gain = fmt.speedup(s.speedup, s.speedup_low, s.speedup_high)
            tps = f"{fmt.num(s.best_throughput, '.1f')} vs {fmt.num(s.baseline_throughput, '.1f')}"
            lines.append(f"Best stack for this machine: {best}, {gain} the baseline's samples/s, measured side by side "
                         f"({tps} samples/s, medians of {s.pairs} pairs; results.jsonl search-result).")
            if s.busy_check:
                lines.append(f"Busy machine: {s.busy_check}.")
        else:
            closest = max((m for m in search_measurements(run) if math.isfinite(m.ratio)), key=lambda m: m.ratio,
                          default=None)
            near = (f"; the closest was {closest.toggle}, {fmt.speedup(closest.ratio, closest.low, closest.high)} in "
                    f"{closest.where}" if closest is not None else "")
            lines.append("Best stack for this machine: the baseline; no toggle sped it up beyond noise (results.jsonl "
                         f"search-result{near}).")
        lines.append(f"The search ran {s.rounds} round(s) in {fmt.num(s.seconds / 60, '.1f')} "
                     f"min (budget {fmt.num(s.budget_s / 60, '.0f')} min) and stopped: {s.stopped or '?'}.")
        target = ladder[-1] if ladder else None
    elif target_of(run):  # --until: time to a result decides, not step time
        more, target = time_to_target_lines(run)
        lines += more
        target = target or next((r for r in run.ok if r.stage == 0), ladder[0] if ladder else None)
    else:
        target, sp = best_ladder_stage(run)
        base = next((r for r in run.ok if r.stage == 0), None)
        if target is not None:
            unproven = " (busy: unproven)" if any(is_busy(r.foreign_cpu_share) for r in (target, base) if r) else ""
            lines.append(f"Fastest stage: {target.name} ({'+'.join(target.stack)}), "
                         f"{fmt.num(target.throughput, '.1f')} samples/s, {fmt.speedup(*sp)} the baseline"
                         f"{unproven} (stages.csv speedup_vs_base).")
        elif base is not None and any(r.ci_basis == "steps" for r in ladder):
            target = max(ladder, key=lambda r: r.throughput)
            lines.append(f"Each stage was timed once, so no speed-up has an interval and none is proven: the fastest "
                         f"was {target.name}, {fmt.speedup(*speedup_of(target, base))} the baseline's samples/s. "
                         f"Rerun with --repeats 3 or more to tell a gain from noise.")
        else:
            target = base or (ladder[0] if ladder else None)
            lines.append("No stage beat the baseline beyond noise (every speed-up interval in the ladder reaches 1.0 "
                         "or below).")
        lines += slower_lines(ladder) + script_lines(ladder)
    busy = [r for r in run.ok if is_busy(r.foreign_cpu_share)]
    if busy:  # the figures above include a neighbour's load: say so where they are stated
        worst = max(busy, key=lambda r: r.foreign_cpu_share)
        again = any(r.kind == "repeat" and r.notes.get("attempt") for r in run.results)
        lines.append(f"The machine was busy during {len(busy)} of {len(run.ok)} stages"
                     f"{' even after measuring them again' if again else ' (busy runs were not measured again)'} "
                     f"(others used up to {worst.foreign_cpu_share * 100:.0f} % of the CPU time, in {worst.name}): "
                     f"their figures include that load; rerun them on a quieter machine before trusting them.")
    base = next((r for r in run.ok if r.stage == 0), None)
    if target is not None and base is not None and target is not base and target.metric_name:
        # Toggles that change how training proceeds (hogwild, ddp's larger global batch, amp's precision)
        # can buy speed with quality: the same steps' metric says whether they did.
        more = (f"; its {target.world_size} processes train on {target.world_size}× the samples per step"
                if target.world_size > 1 else "")
        lines.append(f"Quality at the end of its timed run: {target.name} "
                     f"{fmt.metric(target.metric_name, target.metric)}, the baseline "
                     f"{fmt.metric(base.metric_name, base.metric)} (ladder rows{more}).")
    if target is not None:
        v = verdicts(run)[target.name]
        if v.findings:
            lines.append(f"What limits {target.name} now: " + "; ".join(finding_text(f) for f in v.findings[:3]) + ".")
        else:
            lines.append(f"What limits {target.name} now: {nothing_fired_text(v)}.")
        fresh = [a for a in v.advice if a.refuted is None][:TOP_ADVICE]
        if fresh:
            lines.append("Try next: " + "; ".join(advice_text(a) for a in fresh) + ".")
        elif v.advice:
            lines.append("Nothing the figures point at is left untried: " +
                         "; ".join(f"{a.toggle} {refuted_text(a.refuted)}" for a in v.advice[:TOP_ADVICE]) + ".")
        elif v.findings:
            lines.append("No toggle here addresses that; " + v.findings[0].rule.effect + ".")
    for line in lines:
        part.para(line)
        part.show_closing(line)
    return part


# Order of the decisions within a round of the search table: what was measured first, fastest first.
DECISION_ORDER = (KEPT, FASTER, NO_GAIN, SLOWER, DROPPED, FAILED, CUT, NOT_RETRIED, BUSY)


def table_order(r: StageResult) -> tuple:
    s = RoundNote.of(r)
    if s.role == "incumbent":
        return (s.round, -1, 0.0)
    rank = DECISION_ORDER.index(s.decision) if s.decision in DECISION_ORDER else len(DECISION_ORDER)
    speedup = s.speedup
    return (s.round, rank, -speedup if isinstance(speedup, float) and math.isfinite(speedup) else 0.0)


def search_table_rows(run: RunData) -> list[dict[str, Any]]:
    out = []
    for r in sorted(search_rows(run), key=table_order):
        s = RoundNote.of(r)
        if s.role == "incumbent":
            out.append({"round": s.round, "candidate": "(incumbent)", "on top of": "+".join(r.stack) or "baseline",
                        "samples/s": fmt.num(r.throughput or None, ".1f"), "vs incumbent": "1.00×",
                        "runs": s.runs, "decision": "" if r.status == "ok" else f"failed: {r.reason}",
                        "compile": ""})
            continue
        cs = first_run_notes(run, s.round, s.candidate).get("compile_stats")
        compile_cell = (f"{fmt.num(cs.get('seconds'), '.0f')} s, {cs.get('graph_breaks', 0)} graph break(s), "
                        f"{cs.get('recompiles', 0)} recompile(s)") if isinstance(cs, dict) else ""
        out.append({"round": s.round, "candidate": s.candidate,
                    "on top of": "+".join(s.incumbent) or "baseline",
                    "samples/s": fmt.num(r.throughput or None, ".1f"),
                    "vs incumbent": fmt.speedup(s.speedup, s.speedup_low, s.speedup_high) if s.pairs else fmt.DASH,
                    "runs": s.runs,
                    "decision": s.decision + (f": {s.detail}" if s.detail else ""),
                    "compile": compile_cell})
    found = search_result(run)
    if found is not None and found.stack:
        s = ResultNote.of(found) or ResultNote()
        out.append({"round": "final", "candidate": "+".join(found.stack), "on top of": "baseline",
                    "samples/s": fmt.num(s.best_throughput, ".1f"),
                    "vs incumbent": fmt.speedup(s.speedup, s.speedup_low, s.speedup_high),
                    "runs": s.pairs, "decision": "the best stack beside the baseline", "compile": ""})
    if out and not any(row["compile"] for row in out):
        for row in out:
            del row["compile"]
    return out


def search_table(run: RunData) -> Part:
    part = Part()
    found = search_result(run)
    rows = search_table_rows(run)
    if not rows:
        return part
    part.heading("Search (--stack auto)")
    s = ResultNote.of(found) if found is not None else None
    racing = bool(s and s.strategy == "racing")  # rows before the racing search name no strategy: greedy
    part.para(("Forward selection with racing. " if racing else "Greedy forward selection. ")
              + "Each round measured the best stack so far (the incumbent) and every "
              "remaining candidate on top of it, interleaved; a candidate's speed-up is its samples/s ÷ the "
              "incumbent runs just before and after it, as a geometric mean over the runs with a 95 % t-interval. "
              + (f"A close candidate was measured again, up to {RACING.race}× --repeats; a round keeps the fastest "
                 f"candidate whose interval lies above 1.0 and that gains {RACING.min_gain:.0%} or more; where none "
                 "did, pairs of the round's "
                 "candidates (+ joins them) were tried before the search stopped. Candidates below "
                 f"{s.race_drop if s else RACE_DROP:.2f}× in their first two runs are not measured again that round; "
                 "failed ones are not retried. " if racing else
                 "A round keeps the fastest candidate whose interval lies above 1.0; the search stops when none "
                 f"does. Candidates below {(s.race_drop if s else 0.0) or RACE_DROP:.2f}× in their first run are not "
                 "measured again; failed or clearly slower ones are not retried. ")
              + (f"It took {fmt.num(s.seconds / 60, '.1f')} of {fmt.num(s.budget_s / 60, '.0f')} "
                 f"budget minutes and stopped: {s.stopped or '?'}." if s else "It did not finish."))
    part.table(rows)
    part.show_table(f"{run.name}: search", rows)
    return part


def bottlenecks(run: RunData) -> Part:
    part = Part()
    vs = verdicts(run)
    if not vs:
        return part
    part.heading("Bottlenecks and advice per stage")
    part.para("Each stage's figures against the rules below (study/advice.py RULES); advice lists toggles that "
              "address what fired, not in the stack yet and applicable here, best first. Advice the ladder or the "
              "search already measured without gain is marked.")
    rows = []
    for name, v in vs.items():
        rows.append({"stage": name,
                     "verdict": ", ".join(dict.fromkeys(f.rule.bottleneck for f in v.findings)) or "no rule fired",
                     "evidence": "; ".join(f"{f.rule.figure} {pct(f.value)}" for f in v.findings)
                     or "; ".join(f"{rule.figure} {pct(value)}" for rule, value in figures(v.evidence)) or fmt.DASH,
                     "try next": "; ".join(a.toggle + (" (refuted)" if a.refuted else "") for a in v.advice)
                     or fmt.DASH})
    part.table(rows)
    part.heading("Rules", 3)
    part.table([{"bottleneck": r.bottleneck, "figure": r.figure, "source": r.source,
                 "fires at": f"≥ {pct(r.threshold)}", "toggles": ", ".join(r.fixes) or fmt.DASH,
                 "why they help": "; ".join(f"{t}: {how_of(t, r.bottleneck)}" for t in r.fixes) or r.effect}
                for r in RULES])
    return part
