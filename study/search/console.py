"""`--stack auto` in the terminal: a progress line, one line per candidate, the chosen stack."""
from __future__ import annotations

from optimizations.base import parse_stack
from study.core.machine import Env
from study.models.facts import ModelFacts
from study.advice import candidates
from study.core.config import RunConfig
from study.search.engine import AutoSearch
from study.search.notes import ResultNote
from study.search.rules import Outcome


def outcome_line(o: Outcome) -> str:
    """One console line per candidate of a round."""
    from study.core import fmt

    shown = fmt.speedup(o.speedup, o.low, o.high) if o.ratios else fmt.DASH
    detail = f" ({o.detail})" if o.detail else ""
    return f"  round {o.round} +{o.spec}: {shown} vs the incumbent — {o.decision}{detail}"


def search_stack(cfg: RunConfig, env: Env, console, model: ModelFacts | None = None, nodes=None,
                 recorder=None) -> RunConfig:
    """The search with a progress line and one printed line per candidate; `cfg` with the chosen
    stack, whose ladder the caller runs as a normal study."""
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from study.core import fmt

    offered = [c for c in candidates(env) if model is None or parse_stack([c])[0].fits(model)[0]]
    console.print(f"[bold]--stack auto[/]: racing search over {', '.join(offered) or 'nothing'} "
                  f"({cfg.repeats} runs each per round, more for a close one; pairs where no single one helps; "
                  f"budget {cfg.budget_minutes:g} min)" + (f"; fanned out over {nodes.describe()}" if nodes else ""))
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed:.1f}/{task.total:g} min of the budget"), TimeElapsedColumn(),
                  console=console, transient=True, auto_refresh=False) as progress:
        bar = progress.add_task("search", total=cfg.budget_minutes)
        search: AutoSearch | None = None

        def on_pass(text: str) -> None:
            progress.update(bar, description=text, completed=search.budget.elapsed() / 60 if search else 0.0)
            progress.refresh()

        def on_outcome(o: Outcome) -> None:
            console.print(escape(outcome_line(o)))
            progress.refresh()

        search = AutoSearch(cfg, env, on_pass=on_pass, on_outcome=on_outcome, model=model, nodes=nodes,
                            recorder=recorder)
        result = search.run()
    if result.stack:
        answer = (f"best stack {'+'.join(result.stack)}, {fmt.speedup(result.speedup, result.low, result.high)} "
                  f"the baseline's samples/s side by side")
    else:  # the upper end says how much faster a stack could still be, as measured
        answer = "best stack the baseline (no toggle): none proved faster" + (
            f", and the measured intervals reach up to {result.high:.2f}×" if result.high > 1.0 else "")
    busy = search.check_busy and ResultNote(pairs=search.check_pairs, busy_pairs=search.check_busy).busy_check
    if busy:
        answer += f" ({busy})"
    console.print(f"search: {answer}; {result.rounds} round(s) in {result.seconds / 60:.1f} min; "
                  f"stopped: {result.stopped}. Its ladder follows.")
    return cfg.replace(stack=tuple(result.stack))
