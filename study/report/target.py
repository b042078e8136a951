"""The verdict's time to target (--until): which stage reached the validation metric soonest, against
the baseline, and what samples/s alone would have picked."""
from __future__ import annotations

from study.core.records import StageResult
from study.report.ladder import is_ablation
from study.report.reading import RunData


def target_of(run: RunData) -> str:
    return next(((r.notes.get("until") or {}).get("target", "") for r in run.ok if r.notes.get("until")), "")


def time_to_target_lines(run: RunData) -> tuple[list[str], StageResult | None]:
    """(sentences, the stage the verdict goes on about), or ([], None) when the run had no target."""
    target = target_of(run)
    if not target:
        return [], None
    ladder = [r for r in run.ok if not is_ablation(r)]
    reached = [r for r in ladder if r.time_to_target_s >= 0]
    base = next((r for r in ladder if r.stage == 0), None)
    if not reached:
        return [f"No stage reached {target} within its caps (--until-minutes, --steps); the ladder's samples/s "
                f"say nothing about which would get there first."], None
    best = min(reached, key=lambda r: r.time_to_target_s)
    runs = "one run each, no interval" if best.repeats < 2 else f"medians of {best.repeats} runs"
    line = (f"Fastest to {target}: {best.name} ({'+'.join(best.stack) or 'baseline'}), {best.time_to_target_s:.1f} s "
            f"in {best.steps_to_target} steps")
    if base is not None and base is not best:
        line += (f", against the baseline's {base.time_to_target_s:.1f} s in {base.steps_to_target} steps "
                 f"({base.time_to_target_s / best.time_to_target_s:.2f}× sooner; {runs})"
                 if base.time_to_target_s >= 0 else "; the baseline did not reach it within its caps")
    lines = [line + "."]
    quickest = max(ladder, key=lambda r: r.throughput)
    if quickest is not best:
        how = (f"reached it in {quickest.time_to_target_s:.1f} s ({quickest.steps_to_target} steps)"
               if quickest.time_to_target_s >= 0 else "did not reach it")
        lines.append(f"By samples/s alone {quickest.name} would look best ({quickest.throughput:.1f} samples/s), "
                     f"but it {how}: its steps buy less progress.")
    return lines, best
