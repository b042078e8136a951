"""The search's arithmetic and stopping rule on hand-made numbers; a whole search with a fake machine
(throughput a function of the stack, a clock that only moves when a run "takes" time)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from optimizations.base import Env
from study.core.config import RunConfig
from study.core.records import StageResult, read_results
from study.search import (CUT, DROPPED, FAILED, FASTER, GREEDY, KEPT, NO_GAIN, NOT_RETRIED, SLOWER, AutoSearch, Outcome,
                          decide, fit_round, not_retried, paired_ratios, pass_sequence, speedup_interval)

CPU = Env(device_type="cpu", cuda_count=0, cpu_count=2, bf16_native=True)


def outcome(spec, speedup, low, high, decision=""):
    return Outcome(1, spec, (spec,), ratios=[speedup], speedup=speedup, low=low, high=high, decision=decision)


# --- arithmetic ------------------------------------------------------------------------------------

def test_identical_ratios_have_a_zero_width_interval():
    assert speedup_interval([1.2, 1.2, 1.2]) == pytest.approx((1.2, 1.2, 1.2))


def decided(ratios: list[float]) -> str:
    """The stopping rule's decision on one candidate whose paired runs gave `ratios`."""
    o = outcome("x", *speedup_interval(ratios))
    decide([o])
    return o.decision


def test_runs_spread_widely_are_noise_and_the_same_gain_measured_tightly_or_often_is_kept():
    assert decided([1.1, 1.2, 1.3]) == NO_GAIN  # ±8 % over three runs: a gain of 20 % may be none
    assert decided([1.18, 1.2, 1.22]) == KEPT  # ±2 %: a gain
    assert decided([1.1, 1.2, 1.3] * 3) == KEPT  # the same spread over nine runs: enough evidence
    assert decided([0.8, 0.85, 0.9]) == SLOWER


def test_twice_as_fast_once_and_twice_as_slow_once_is_no_speedup():
    """Ratios are averaged as ratios (in log space): 2× and 0.5× cancel; their plain mean, 1.25×,
    would call it a gain. Reciprocal runs give the reciprocal interval."""
    m, lo, hi = speedup_interval([2.0, 0.5])
    assert m == pytest.approx(1.0) and lo < 1.0 < hi and decided([2.0, 0.5]) == NO_GAIN
    inv = speedup_interval([1 / 1.1, 1 / 1.2, 1 / 1.3])
    assert inv == pytest.approx(tuple(1 / v for v in (speedup_interval([1.1, 1.2, 1.3])[i] for i in (0, 2, 1))))


def test_one_ratio_takes_the_runs_own_interval():
    assert speedup_interval([1.5], single=(1.2, 1.9)) == (1.5, 1.2, 1.9)
    assert all(math.isnan(x) for x in speedup_interval([]))


def test_pass_sequence_brackets_every_block_of_candidates_with_the_incumbent():
    seq = pass_sequence(["a", "b", "c", "d", "e"], 0, every=2)
    assert [(r, s) for r, s, _ in seq] == [("incumbent", ""), ("candidate", "a"), ("candidate", "b"), ("incumbent", ""),
                                           ("candidate", "c"), ("candidate", "d"), ("incumbent", ""),
                                           ("candidate", "e"), ("incumbent", "")]
    assert [slot for r, _, slot in seq if r == "incumbent"] == [0, 1, 2, 3]
    assert [s for r, s, _ in pass_sequence(["a", "b", "c"], 1) if r == "candidate"] == ["b", "c", "a"]


def test_ratio_against_the_incumbent_runs_around_it():
    seq = [("incumbent", "", 100.0), ("candidate", "a", 120.0), ("candidate", "b", 90.0), ("incumbent", "", 121.0),
           ("candidate", "c", 50.0), ("incumbent", "", None)]  # the last incumbent run failed
    got = paired_ratios(seq)
    assert got["a"] == [pytest.approx(120 / 110.0)] and got["b"] == [pytest.approx(90 / 110.0)]
    assert got["c"] == [pytest.approx(50 / 121.0)]


def test_an_incumbent_run_caught_by_a_burst_of_load_is_no_reference():
    seq = [("incumbent", "", 300.0), ("candidate", "a", 330.0), ("incumbent", "", 60.0),  # another tenant's burst
           ("candidate", "b", 290.0), ("incumbent", "", 310.0), ("candidate", "c", 320.0), ("incumbent", "", 305.0)]
    got = paired_ratios(seq)
    assert got["a"] == [pytest.approx(1.1)] and got["b"] == [pytest.approx(290 / 310.0)]
    assert got["c"] == [pytest.approx(320 / math.sqrt(310.0 * 305.0))]


# --- the stopping rule -----------------------------------------------------------------------------

def test_keeps_the_fastest_candidate_whose_interval_lies_above_one():
    outs = [outcome("a", 1.10, 1.02, 1.18), outcome("b", 1.30, 1.15, 1.45), outcome("c", 1.5, 0.8, 2.2),
            outcome("d", 0.7, 0.6, 0.8)]
    assert decide(outs) == "b"
    assert [o.decision for o in outs] == [FASTER, KEPT, NO_GAIN, SLOWER]


def test_stops_when_no_interval_lies_above_one():
    outs = [outcome("a", 1.2, 0.95, 1.5), outcome("b", 0.9, 0.85, 0.95)]
    assert decide(outs) is None
    assert [o.decision for o in outs] == [NO_GAIN, SLOWER]


def test_failed_dropped_and_cut_never_win():
    outs = [outcome("a", 2.0, 1.5, 2.5, decision=FAILED), outcome("b", 2.0, 1.5, 2.5, decision=DROPPED),
            outcome("c", 2.0, 1.5, 2.5, decision=CUT)]
    assert decide(outs) is None


def test_what_is_not_retried():
    assert not_retried(outcome("a", 0.5, 0.4, 0.6, decision=SLOWER))
    assert not not_retried(outcome("a", 0.95, 0.92, 0.98, decision=SLOWER))  # slower, but within reach
    assert not_retried(outcome("a", 1, 1, 1, decision=FAILED)) and not_retried(outcome("a", 1, 1, 1, decision=DROPPED))
    assert not not_retried(outcome("a", 1, 1, 1, decision=CUT))


def test_budget_cuts_the_least_promising_but_lets_a_cheap_one_in():
    cost = {"a": 10.0, "big": 200.0, "c": 10.0}
    chosen, cut = fit_round(["a", "big", "c"], cost.get, cost.get, incumbent=10.0, passes=1, seconds_left=60.0)
    assert chosen == ["a", "c"] and cut == ["big"]
    assert fit_round(["a"], cost.get, cost.get, 10.0, 1, 5.0) == ([], ["a"])


# --- a whole search on a fake machine --------------------------------------------------------------

GAIN = {"amp=bf16": 1.30, "channels_last": 1.0, "compile=default": 1.0, "workers=1": 1.0, "workers=2": 1.0,
        "fused_optim": 1.0, "ddp=2": 0.5, "script": 0.3, "hogwild=2": 0.9, "batch=x2": 1.0}


class FakeMachine:
    """Throughput = 100 × the gains of the stack (channels_last pays only together with amp), a small
    deterministic wobble per run; every run takes `run_s` seconds of the fake clock."""

    def __init__(self, run_s: float = 10.0, fail: str = "") -> None:
        self.now, self.run_s, self.fail, self.runs = 0.0, run_s, fail, []

    def clock(self) -> float:
        return self.now

    def measure(self, sspec, pass_index: int, tag: str):
        stack = tuple(sspec.stack)
        self.runs.append(stack)
        self.now += self.run_s
        if self.fail and self.fail in stack:
            failed = StageResult(run="x", stage=0, name=sspec.name, status="failed", error="RuntimeError: boom")
            return failed, self.run_s
        tp = 100.0
        for s in stack:
            tp *= GAIN[s] if not (s == "channels_last" and "amp=bf16" in stack) else 1.15
        # ±1 %: a quiet machine; each stack's own runs go round -1, 0, +1 %, so no neutral toggle's runs
        # all land on the same side of its incumbent's, whatever else the search runs between them
        tp *= 1 + 0.01 * (self.runs.count(stack) % 3 - 1)
        return StageResult(run="x", stage=0, name=sspec.name, stack=list(stack), status="ok", throughput=tp,
                           throughput_ci_low=tp * 0.97, throughput_ci_high=tp * 1.03, t_forward=0.03,
                           t_backward=0.05, t_optimizer=0.004, t_data=0.002, device="cpu"), self.run_s


def config(tmp_path, **kw) -> RunConfig:
    return RunConfig(run_name="auto", reports_root=str(tmp_path / "reports"), profiles_root=str(tmp_path / "profiles"),
                     repeats=3, stack=("auto",), **{"budget_minutes": 600.0, **kw})


def test_greedy_keeps_amp_then_channels_last_and_stops(tmp_path):
    m = FakeMachine()
    result = AutoSearch(config(tmp_path), CPU, measure=m.measure, clock=m.clock, strategy=GREEDY).run()
    assert result.stack == ["amp=bf16", "channels_last"]
    assert result.rounds == 3 and result.stopped.startswith("no measured candidate helped")
    assert result.low > 1.0 and result.speedup == pytest.approx(1.30 * 1.15, rel=0.03)
    by_round = {(o.round, o.spec): o for o in result.outcomes}
    assert by_round[(1, "amp=bf16")].decision == KEPT
    assert by_round[(1, "script")].decision == DROPPED  # 0.3× in its first run: not measured twice
    assert by_round[(2, "channels_last")].decision == KEPT
    assert by_round[(2, "script")].decision == NOT_RETRIED
    rows = read_results(tmp_path / "reports" / "auto" / "results.jsonl")
    kinds = {r.kind for r in rows}
    assert kinds == {"search-repeat", "search", "search-result"}  # nothing the ladder would read as a stage
    assert rows[-1].kind == "search-result" and rows[-1].stack == ["amp=bf16", "channels_last"]


def test_racing_keeps_the_same_stack_then_tries_pairs_before_it_stops(tmp_path):
    m = FakeMachine()
    result = AutoSearch(config(tmp_path), CPU, measure=m.measure, clock=m.clock).run()  # the default: racing
    assert result.stack == ["amp=bf16", "channels_last"]  # the ±1 % wobble of a neutral toggle is never kept
    assert result.rounds == 4 and result.stopped.startswith("no measured candidate helped beyond noise, nor a pair")
    by_round = {(o.round, o.spec): o for o in result.outcomes}
    assert by_round[(1, "script")].decision == DROPPED and by_round[(1, "script")].runs == 2  # confirmed
    assert by_round[(2, "script")].decision == DROPPED  # readmitted: a toggle may pay on a new incumbent
    pairs = [o for o in result.outcomes if o.round == 4]
    assert pairs and all("+" in o.spec and o.decision != KEPT for o in pairs)


def test_resume_replays_finished_runs_without_measuring(tmp_path):
    m = FakeMachine()
    first = AutoSearch(config(tmp_path), CPU, measure=m.measure, clock=m.clock).run()
    again = FakeMachine()
    second = AutoSearch(config(tmp_path, resume=True), CPU, measure=again.measure, clock=again.clock).run()
    assert again.runs == [] and second.stack == first.stack
    assert second.seconds == pytest.approx(first.seconds)  # the earlier runs' time still counts


def test_an_interrupted_search_keeps_its_runs_and_resume_finishes_it(tmp_path):
    m = FakeMachine()

    def interrupted(sspec, pass_index, tag):
        if len(m.runs) == 12:
            raise KeyboardInterrupt
        return m.measure(sspec, pass_index, tag)

    with pytest.raises(KeyboardInterrupt):
        AutoSearch(config(tmp_path), CPU, measure=interrupted, clock=m.clock).run()
    kept = [r for r in read_results(tmp_path / "reports" / "auto" / "results.jsonl") if r.kind == "search-repeat"]
    assert len(kept) == 12
    again = FakeMachine()
    result = AutoSearch(config(tmp_path, resume=True), CPU, measure=again.measure, clock=again.clock).run()
    whole = FakeMachine()
    AutoSearch(config(tmp_path / "whole"), CPU, measure=whole.measure, clock=whole.clock).run()
    assert result.stack == ["amp=bf16", "channels_last"]
    assert len(again.runs) + 12 == len(whole.runs)  # nothing finished was measured twice


def test_a_small_budget_cuts_candidates_and_says_so(tmp_path):
    m = FakeMachine(run_s=10.0)
    search = AutoSearch(config(tmp_path, budget_minutes=6.0), CPU, measure=m.measure, clock=m.clock)
    result = search.run()
    cut = [o for o in result.outcomes if o.decision == CUT]
    assert {o.spec for o in cut} >= {"compile=default", "script", "hogwild=2"}  # the costly and the unlikely
    assert all(o.runs == 0 and o.round == 1 for o in cut)
    assert result.stack == ["amp=bf16"] and result.stopped.startswith("budget spent")
    # the search, its final check included, leaves the chosen stack's ladder (a timing run per stage
    # and pass on this machine) room inside the budget
    ladder = (len(result.stack) + 1) * search.passes * m.run_s
    assert m.now + ladder <= 6 * 60, (m.now, ladder)
    roomy = FakeMachine(run_s=10.0)
    more = AutoSearch(config(tmp_path / "roomy", budget_minutes=12.0), CPU, measure=roomy.measure, clock=roomy.clock).run()
    assert {o.spec for o in more.outcomes if o.decision == CUT} < {o.spec for o in cut}  # twice the budget cuts fewer
    assert len(roomy.runs) > len(m.runs)


def test_a_failing_candidate_is_recorded_and_not_retried(tmp_path):
    m = FakeMachine(fail="fused_optim")
    result = AutoSearch(config(tmp_path), CPU, measure=m.measure, clock=m.clock).run()
    fused = [o for o in result.outcomes if o.spec == "fused_optim"]
    assert fused[0].decision == FAILED and "boom" in fused[0].detail and fused[0].runs == 1
    assert all(o.decision == NOT_RETRIED for o in fused[1:])


def test_a_failing_baseline_stops_the_search_at_once(tmp_path):
    m = FakeMachine()

    def broken(sspec, pass_index, tag):
        m.runs.append(tuple(sspec.stack))
        return StageResult(run="x", stage=0, name=sspec.name, status="failed", error="OSError: no data"), 1.0

    result = AutoSearch(config(tmp_path), CPU, measure=broken, clock=m.clock).run()
    assert result.stack == [] and result.stopped.startswith("the incumbent failed") and len(m.runs) == 1


# --- end to end ------------------------------------------------------------------------------------

# What the end-to-end search may try: one cheap toggle, so the search does the same work on any
# machine and its budget never decides what is measured (the fake machine above covers the budget).
E2E_CANDIDATES = ("channels_last",)


def cap_candidates(monkeypatch, keep) -> None:
    """The search is offered only the toggles in `keep`: every other registered toggle offers it no value.
    One seam, the registry's own (search_values, what every caller of candidates() reads)."""
    from optimizations.base import candidates, load_all

    for cls in load_all().values():
        if cls.name not in keep:
            monkeypatch.setattr(cls, "search_values", classmethod(lambda cls, env: []))
    assert candidates(CPU) == list(keep)


@pytest.mark.slow
def test_auto_study_end_to_end_on_a_tiny_model(tmp_path, synthetic_root, monkeypatch, capfd):
    """The CLI with --stack auto (in this process, its runs in child processes as always): a search
    over one candidate with a budget far beyond its needs, so what is measured does not depend on
    the machine's speed; its table and verdict in the report, the chosen stack's ladder as a normal
    run; `study report` renders them again."""
    from study.cli import main
    from tests.util import line_after_every_table, results

    cap_candidates(monkeypatch, E2E_CANDIDATES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    # a few plain steps per run, not a dry run: its sanity check and checkpoint round trips are no part
    # of the search, and every one of the search's child runs would pay for the round trips
    args = ["--model", "tiny", "--steps", "5", "--warmup", "1", "--batch-size", "16", "--subset", "128",
            "--val-subset", "16", "--val-steps", "1", "--stack", "auto", "--repeats", "1", "--budget-minutes", "600",
            "--profile", "", "--no-pictures", "--data-root", str(synthetic_root), "--run-name", "a"]
    code = main(args)
    err = capfd.readouterr().err
    assert code == 0, err
    rows = results(tmp_path, "a")
    found = [r for r in rows if r["kind"] == "search-result"]
    assert len(found) == 1 and found[0]["notes"]["search"]["stopped"]
    assert not found[0]["notes"]["search"]["stopped"].startswith("budget")
    offered = [r["notes"]["search"] for r in rows if r["kind"] == "search" and r["notes"]["search"]["role"] == "candidate"]
    assert [(o["round"], o["candidate"]) for o in offered] == [(1, "channels_last")]
    assert offered[0]["runs"] >= 1 and offered[0]["decision"] != CUT  # measured, whatever the machine's speed
    stages = [r for r in rows if r["kind"] == "stage"]
    assert [r["stack"] for r in stages] == [found[0]["stack"][:k] for k in range(len(found[0]["stack"]) + 1)]
    line_after_every_table(err, "Best stack for this machine")  # the verdict closes the output
    md = (tmp_path / "reports" / "a" / "summary.md").read_text()
    assert md.index("## Verdict") < md.index("## Search (--stack auto)")
    (tmp_path / "reports" / "a" / "summary.md").unlink()
    assert main(["report", "a"]) == 0, capfd.readouterr().err
    assert "## Search (--stack auto)" in (tmp_path / "reports" / "a" / "summary.md").read_text()
    assert not list((tmp_path / "reports" / "a" / "search" / "checkpoints").glob("*.pt"))  # no leftovers


class BusyMachine(FakeMachine):
    """The fake machine, but others use `share` of the CPU during every run from run `from_run` on."""

    def __init__(self, share: float, from_run: int = 0, **kw) -> None:
        super().__init__(**kw)
        self.share, self.from_run = share, from_run

    def measure(self, sspec, pass_index: int, tag: str):
        row, seconds = super().measure(sspec, pass_index, tag)
        row.foreign_cpu_share = self.share if len(self.runs) > self.from_run else 0.02
        if row.foreign_cpu_share > 0.5 and row.status == "ok":
            row.throughput *= 0.3  # what a neighbour does to a run: script and ddp would look as slow as amp
        return row, seconds


def test_a_machine_busy_all_along_is_too_busy_to_answer_and_nothing_is_refuted(tmp_path):
    from study.search import BUSY

    m = BusyMachine(share=0.8)
    result = AutoSearch(config(tmp_path), CPU, measure=m.measure, clock=m.clock).run()
    assert result.stack == [] and result.stopped.startswith("the machine stayed too busy to answer")
    first = [o for o in result.outcomes if o.round == 1]
    assert first and all(o.decision == BUSY for o in first if o.decision != "failed"), [(o.spec, o.decision) for o in first]
    assert not any(o.decision in (DROPPED, "slower") for o in result.outcomes)  # a busy run refutes nothing


def test_busy_runs_are_left_out_and_quiet_ones_still_decide(tmp_path):
    m = BusyMachine(share=0.8, from_run=10 ** 6)  # quiet: the same answer as the plain fake machine
    quiet = AutoSearch(config(tmp_path), CPU, measure=m.measure, clock=m.clock).run()
    assert quiet.stack[:1] == ["amp=bf16"] and not quiet.stopped.startswith("the machine stayed too busy")


def test_moves_whose_toggles_cannot_take_the_model_are_never_tried(tmp_path):
    from study.models.facts import ModelFacts

    m = FakeMachine()
    tokens = ModelFacts(convolutions=0, input_shape=(64,), input_dtype="torch.int64")  # a language model
    result = AutoSearch(config(tmp_path), CPU, measure=m.measure, clock=m.clock, model=tokens).run()
    assert not any("channels_last" in stack for stack in m.runs)
    assert "channels_last" not in {o.spec for o in result.outcomes} and result.stack[:1] == ["amp=bf16"]


class BusyCheck(FakeMachine):
    """The fake machine, quiet through the rounds, busy (others at 60 %) during the final check's pairs:
    all of them, or only the first pass's."""

    def __init__(self, every_pair: bool) -> None:
        super().__init__()
        self.every_pair = every_pair

    def measure(self, sspec, pass_index: int, tag: str):
        row, seconds = super().measure(sspec, pass_index, tag)
        check = sspec.name.endswith(("-baseline", "-best"))
        row.foreign_cpu_share = 0.6 if check and (self.every_pair or pass_index == 0) else 0.02
        return row, seconds


@pytest.mark.parametrize("every_pair", [True, False])
def test_a_final_check_on_a_busy_machine_says_so_or_leaves_the_busy_pair_out(tmp_path, every_pair):
    from study.search.notes import ResultNote

    m = BusyCheck(every_pair)
    result = AutoSearch(config(tmp_path), CPU, measure=m.measure, clock=m.clock).run()
    assert result.stack[:1] == ["amp=bf16"]
    note = ResultNote.of(read_results(tmp_path / "reports" / "auto" / "results.jsonl")[-1])
    if every_pair:  # the figure is kept, and said to be a shared machine's
        assert (note.pairs, note.busy_pairs) == (3, 3) and "every pair of the final check" in note.busy_check
    else:  # the quiet pairs decide
        assert (note.pairs, note.busy_pairs) == (2, 1) and "left out" in note.busy_check
