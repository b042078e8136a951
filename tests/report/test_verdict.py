"""The answer in the report: the verdict at the top, the search table, bottlenecks per stage, what
compile did; built from hand-made results.jsonl rows (a fake search and a ladder)."""
from __future__ import annotations

import json
from pathlib import Path

from optimizations.base import Env
from study.core.records import StageResult
from study.core.recorder import append_jsonl
from study.report import Doc, run_report
from study.report.build import build_report
from study.search import GREEDY, AutoSearch
from tests.report.helpers import make_run
from tests.test_search import FakeMachine, config
from tests.util import line_after_every_table

CPU = Env(device_type="cpu", cuda_count=0, cpu_count=2, bf16_native=True)


def ladder_row(index: int, name: str, stack: list[str], tp: float, **kw) -> StageResult:
    row = dict(run="auto", stage=index, name=name, stack=stack, status="ok", device="cpu", throughput=tp,
               throughput_ci_low=tp * 0.97, throughput_ci_high=tp * 1.03, t_data=0.002, t_forward=0.03,
               t_backward=0.05, t_optimizer=0.004, data_wait_share=0.02, step_time_p50=32 / tp, repeats=3,
               warmup_seconds=2.0, ci_basis="repeats", metric_name="top1", metric=0.5, final_loss=1.0)
    row.update(kw)
    return StageResult(**row)


def auto_run(tmp_path: Path) -> Path:
    """reports/auto/: a search on the fake machine, then the chosen stack's ladder, with a trace summary
    that makes the last stage compute-bound."""
    m = FakeMachine()
    cfg = config(tmp_path)
    AutoSearch(cfg, CPU, measure=m.measure, clock=m.clock, strategy=GREEDY).run()  # the figures below are greedy's
    run_dir = cfg.report_dir
    (run_dir / "config.json").write_text(json.dumps({"config": cfg.to_dict(), "env": CPU.__dict__}))
    summary = run_dir / "trace_summary.json"
    summary.write_text(json.dumps({"step_ms_mean": 80.0, "steps": 4, "device_events": False,
                                   "categories_ms": {"cpu_exec": 72.0, "other": 8.0}, "ops": {}, "kernels": {}}))
    rows = [ladder_row(0, "00-base", [], 100.0, metric=0.5), ladder_row(1, "01-amp_bf16", ["amp=bf16"], 130.0),
            ladder_row(2, "02-channels_last", ["amp=bf16", "channels_last"], 150.0, metric=0.55,
                       profiles={"trace_summary": str(summary)})]
    for r in rows:
        r.kind = "stage"
        append_jsonl(run_dir / "results.jsonl", r)
    return run_dir


def test_verdict_comes_first_and_quotes_its_figures(tmp_path):
    md = run_report(auto_run(tmp_path)).markdown()
    assert md.index("## Verdict") < md.index("## Ladder") < md.index("## Search (--stack auto)")
    verdict = md[md.index("## Verdict"):md.index("## Ladder")]
    best = has(verdict, "Best stack", "amp=bf16+channels_last", "1.4", "samples/s", "results.jsonl search-result")
    limits = has(verdict, "What limits", "02-channels_last", "compute-bound", "90.0 %")
    quality = has(verdict, "Quality", "02-channels_last top1 0.550", "top1 0.500")
    # amp and channels_last are in the stack; compile, which compute-bound points at next, the search refuted
    untried = has(verdict, "Nothing the figures point at", "compile=default", "round 3")
    assert best < limits and best < quality and limits < untried


def has(text: str, label: str, *facts: str) -> int:
    """The position of the line of `text` that starts with `label`, checked to hold every fact."""
    lines = [line.lstrip("#*- ") for line in text.splitlines()]
    at = next(i for i, line in enumerate(lines) if line.startswith(label))
    assert all(f in lines[at] for f in facts), (lines[at], facts)
    return at


def test_search_table_lists_every_candidate_of_every_round(tmp_path):
    md = run_report(auto_run(tmp_path)).markdown()
    table = md[md.index("## Search (--stack auto)"):md.index("## Where a step")]
    assert "| 1 | (incumbent) | baseline |" in table
    assert "| 1 | amp=bf16 | baseline |" in table and "kept" in table
    assert "| 2 | channels_last | amp=bf16 |" in table
    assert "dropped: 0.3" in table  # script, after its first run
    assert "not retried" in table
    assert "| final | amp=bf16+channels_last | baseline |" in table


def test_bottlenecks_section_holds_the_rules_table(tmp_path):
    md = run_report(auto_run(tmp_path)).markdown()
    part = md[md.index("## Bottlenecks and advice per stage"):]
    assert "| 02-channels_last | compute-bound |" in part
    assert "### Rules" in part and "| data-bound | data-wait share of the step |" in part


def test_advice_refuted_by_the_search_is_marked(tmp_path):
    md = run_report(auto_run(tmp_path)).markdown()
    part = md[md.index("## Bottlenecks and advice per stage"):md.index("### Rules")]
    row = next(line for line in part.splitlines() if line.startswith("| 02-channels_last"))
    assert "compile=default (refuted)" in row  # the search measured it without gain in round 2


def test_console_ends_with_the_verdict(tmp_path, capsys):
    run_dir = auto_run(tmp_path)
    build_report([run_dir])
    err = capsys.readouterr().err
    lines = err.splitlines()  # the verdict closes the output: after every table, the answer first
    verdict = line_after_every_table(err, "Best stack for this machine")
    assert verdict < next(i for i, line in enumerate(lines) if line.startswith("What limits 02-channels_last"))


def test_ladder_runs_get_a_verdict_without_a_search(tmp_path):
    md = run_report(make_run(tmp_path, "fx")).markdown()
    verdict = md[md.index("## Verdict"):md.index("## Ladder")]
    assert "Fastest stage: 03-script" in verdict and "stages.csv speedup_vs_base" in verdict
    assert "## Search" not in md


def test_compile_section_shows_breaks_recompiles_and_payback(tmp_path):
    run_dir = tmp_path / "reports" / "c"
    stats = {"seconds": 61.5, "graphs": 3, "graph_breaks": 1, "graph_break_reasons": ["model.py:10: Data-dependent"],
             "recompiles": 2, "recompile_reasons": ["forward (resnet.py:284): GLOBAL_STATE changed: grad_mode"],
             "cache_hits": 0, "cache_misses": 4}
    notes = {"compile": "mode=default; compile time is in warmup_seconds", "compile_stats": stats}
    for r in (ladder_row(0, "00-base", [], 100.0),
              ladder_row(1, "01-compile", ["compile"], 125.0, warmup_seconds=70.0, notes=notes),
              ladder_row(2, "02-fused_optim", ["compile", "fused_optim"], 120.0, warmup_seconds=70.0, notes=notes)):
        r.kind = "stage"
        append_jsonl(run_dir / "results.jsonl", r)
    md = run_report(run_dir).markdown()
    part = md[md.index("## torch.compile"):]
    assert "| 01-compile | default | 61.5 | 70.0 | 3 | 1 | 2 |" in part
    assert "GLOBAL_STATE changed: grad_mode" in part and "0/4" in part
    assert "pay back after about" in part
    assert "02-fused_optim" in part and "02-fused_optim: " not in part  # in the table; no compile line of its own


def test_doc_prints_closing_lines_after_every_table():
    from study.report import Part

    class Console:
        def __init__(self):
            self.out = []

        def print(self, x, **kw):
            self.out.append(str(x))

    first, second = Part(), Part()
    first.show_closing("the answer")
    second.show_line("a table's line")
    c = Console()
    Doc("t", [first, second]).print_shown(c)
    assert c.out == ["a table's line", "the answer"]
