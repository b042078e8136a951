"""The simulated machine, the search's moves, and what the racing search finds where greedy does not:
the real engine on simulated machines (no training, a simulated clock)."""
from __future__ import annotations

import math

import pytest

from study.search import GREEDY, RACING, AutoSearch, DROPPED, judge, Outcome, trimmed
from benchmarks.simulated_machines import CPU2, GPU1, SHARED, cpu_resnet18, gpu_resnet50, random_profile
from study.search.moves import PAIR, apply, pair_moves, single_moves
from benchmarks.simulated_search import (Bursts, Profile, SimulatedMachine, all_stacks, exhaustive, run_search, speedup,
                                   true_throughput)

# Two toggles that only pay together (each alone a little slower), every other one clearly slower:
# no single move gains, so greedy stops on the baseline.
ONLY_TOGETHER = Profile(
    name="pair", env=CPU2, base_tp=200.0, noise=0.01, startup_s=5.0, steps_s=2.0,
    effects={"amp=bf16": 0.9, "compile": 0.9, "workers": 0.9, "ddp": 0.9, "script": 0.9, "hogwild": 0.9,
             "channels_last": 0.97, "fused_optim": 0.97},
    pairs={("channels_last", "fused_optim"): 1.45})


# --- the simulated machine -------------------------------------------------------------------------

def test_effects_pairs_fails_and_the_loader_make_the_throughput():
    p = Profile(name="t", env=CPU2, base_tp=100.0, effects={"amp": 1.5, "compile=default": 1.2},
                pairs={("amp", "channels_last"): 2.0}, fails=(("script",), ("amp", "hogwild")))
    assert true_throughput(p, ()) == pytest.approx(100.0)
    assert speedup(p, ("amp=bf16", "compile=default")) == pytest.approx(1.8)
    assert speedup(p, ("amp=bf16", "channels_last")) == pytest.approx(3.0)  # the pair's factor on top
    assert speedup(p, ("channels_last",)) == pytest.approx(1.0)
    assert true_throughput(p, ("script",)) == 0.0 and true_throughput(p, ("hogwild=2", "amp=bf16")) == 0.0
    # a loader at 100 samples/s: waited for in turn without workers, overlapped with them
    d = p.with_(data_tp=100.0, data_effects={"workers": 4.0}, overlap=("workers",))
    assert true_throughput(d, ()) == pytest.approx(50.0)
    assert true_throughput(d, ("amp=bf16",)) == pytest.approx(1 / (1 / 150 + 1 / 100))  # amp pays little
    assert true_throughput(d, ("workers=2", "amp=bf16")) == pytest.approx(150.0)


def test_every_stack_the_registry_allows_once_and_none_it_refuses():
    stacks = all_stacks(CPU2)
    sets = {frozenset(s) for s in stacks}
    assert len(sets) == len(stacks) and frozenset() in sets
    names = [{s.partition("=")[0] for s in st} for st in stacks]
    assert not any({"compile", "script"} <= n or {"ddp", "hogwild"} <= n for n in names)  # the conflicts
    assert any({"amp", "hogwild", "compile", "workers"} <= n for n in names)
    ex = exhaustive(ONLY_TOGETHER, repeats=3)
    assert set(ex.best) == {"channels_last", "fused_optim"} and ex.best_speedup == pytest.approx(0.97 ** 2 * 1.45)
    assert ex.runs == 3 * len(stacks)


def test_runs_take_simulated_time_with_a_cold_compile_first_and_bursts_slow_them():
    p = cpu_resnet18().with_(noise=0.0)
    m = SimulatedMachine(p, seed=1)

    class Spec:
        def __init__(self, stack):
            self.stack, self.name = stack, "x"

    row, cold = m.measure(Spec(("compile=default",)), 0, "t")
    _, warm = m.measure(Spec(("compile=default",)), 1, "t")
    assert row.status == "ok" and row.throughput == pytest.approx(true_throughput(p, ("compile=default",)))
    assert cold - warm == pytest.approx(150.0 - 20.0)  # the registry's cold and warm compile costs on a CPU
    assert m.clock() == pytest.approx(cold + warm)
    loud = SimulatedMachine(p.with_(bursts=Bursts()), seed=1)
    loud.bursts, loud._burst_horizon = [(0.0, 1e9, 2.0)], 1e9  # one neighbour, busy all along
    slow, _ = loud.measure(Spec(()), 0, "t")
    assert slow.throughput == pytest.approx(true_throughput(p, ()) / 2)
    assert loud.slowdown(1e9 - 5, 1e9 + 5) == (1.5, 0.5)  # half a run in the burst: half its slowdown


def test_random_machines_are_seeded_and_the_measured_ones_hold_their_figures():
    import random

    a, b = random_profile(random.Random(7), 0), random_profile(random.Random(7), 0)
    assert a == b
    r18 = cpu_resnet18()
    # the measured stack, less the few per cent its loader wait takes of a faster step
    assert speedup(r18, ("hogwild=2", "amp=bf16")) == pytest.approx(1.77, rel=0.05)
    assert speedup(r18, ("amp=bf16",)) == pytest.approx(1.0, abs=0.01)  # amp alone gained nothing
    gpu = gpu_resnet50()
    assert gpu.env == GPU1 and speedup(gpu, ("workers=8",)) > 2.0  # the baseline's loader starves the GPU


# --- moves and the rules they need -----------------------------------------------------------------

def test_a_move_adds_swaps_or_does_both():
    assert apply(("workers=2",), "amp=bf16") == ("workers=2", "amp=bf16")
    assert apply(("workers=2", "amp=bf16"), "workers=8") == ("workers=8", "amp=bf16")  # a swap keeps the place
    assert apply(("workers=2",), "workers=8" + PAIR + "amp=bf16") == ("workers=8", "amp=bf16")
    swaps = [m for m in single_moves(GPU1, ("workers=2",), swaps=True) if m.startswith("workers")]
    assert swaps == ["workers=4", "workers=8"]
    assert not any(m.startswith("workers") for m in single_moves(GPU1, ("workers=2",), swaps=False))


def test_a_rival_can_take_a_kept_toggles_place():
    moves = single_moves(CPU2, ("ddp=2", "amp=bf16"), swaps=True)
    assert "-ddp=2+hogwild=2" in moves and "hogwild=2" not in moves  # hogwild conflicts with ddp: only in its place
    assert apply(("ddp=2", "amp=bf16"), "-ddp=2+hogwild=2") == ("amp=bf16", "hogwild=2")
    # a replacement pairs with an add, never with a move on the toggles it touches
    got = pair_moves(("ddp=2",), {"-ddp=2+hogwild=2": 0.96, "amp=bf16": 1.0, "ddp=2+x": math.nan}, limit=5)
    assert got == ["-ddp=2+hogwild=2+amp=bf16"]


def test_rivals_picked_wrong_first_are_undone_by_racing(tmp_path):
    """ddp=2 beats hogwild=2 alone, but bf16 pays only on top of hogwild (as measured here: 1.77×
    together): greedy keeps ddp=2 and stays there; racing puts hogwild=2 in its place with amp."""
    p = Profile(name="rivals", env=CPU2, base_tp=100.0, noise=0.01, startup_s=5.0, steps_s=5.0,
                effects={"ddp=2": 1.30, "hogwild=2": 1.20, "amp=bf16": 0.98, "compile": 0.9, "workers": 0.9,
                         "script": 0.9, "channels_last": 0.9, "fused_optim": 0.9, "batch": 0.9},
                pairs={("hogwild", "amp"): 1.5})
    greedy = run_search(p, 1, tmp_path / "g", strategy=GREEDY)
    racing = run_search(p, 1, tmp_path / "r", strategy=RACING)
    assert greedy.stack == ("ddp=2",) and not greedy.found
    assert set(racing.stack) == {"hogwild=2", "amp=bf16"} and racing.found


def test_pairs_are_ranked_by_their_measured_speed_ups_and_never_conflict():
    measured = {"compile=default": 1.0, "script": 0.99, "channels_last": 0.97, "fused_optim": 0.96, "ddp=2": 0.5}
    got = pair_moves((), measured, limit=10)
    assert got[0] == "compile=default+channels_last"
    assert "compile=default+script" not in got and "script+compile=default" not in got  # a conflict
    assert not any("ddp=2" in m for m in got)  # 0.5 × anything is below the floor
    assert len(pair_moves((), measured, limit=2)) == 2


def test_a_gain_below_the_minimum_is_no_gain_and_a_burst_hit_ratio_is_trimmed():
    o = Outcome(1, "a", ("a",), ratios=[1.01] * 3, speedup=1.01, low=1.005, high=1.015)
    assert judge(o) == "faster" and judge(o, min_gain=0.02) == "no gain"
    assert trimmed([1.2, 1.21, 0.6, 1.19]) == [1.2, 1.21, 1.19]
    assert trimmed([1.2, 0.6]) == [1.2, 0.6]  # two: no median tells which one was hit


# --- the searches on simulated machines ------------------------------------------------------------

def test_a_pair_that_only_pays_together_is_found_by_racing_and_missed_by_greedy(tmp_path):
    greedy = run_search(ONLY_TOGETHER, 3, tmp_path / "g", strategy=GREEDY)
    racing = run_search(ONLY_TOGETHER, 3, tmp_path / "r", strategy=RACING)
    assert greedy.stack == () and not greedy.found
    assert set(racing.stack) == {"channels_last", "fused_optim"} and racing.found
    assert racing.claimed[1] > 1.0  # its final check beside the baseline says so too
    assert racing.seconds < racing.best.seconds / 3


def test_a_dropped_candidate_gets_a_second_run_before_it_is_dropped(tmp_path):
    """A busy neighbour slows amp's first run to a third; greedy drops amp at once, racing measures it
    again (the burst is over) and keeps it."""
    p = Profile(name="burst", env=CPU2, base_tp=100.0, noise=0.0, startup_s=5.0, steps_s=5.0,
                effects={"amp=bf16": 1.3, "compile": 0.9, "workers": 0.9, "ddp": 0.9, "script": 0.9, "hogwild": 0.9,
                         "channels_last": 0.9, "fused_optim": 0.9})

    def searched(strategy, root):
        m = SimulatedMachine(p, seed=0)
        measure = m.measure

        def hit_once(sspec, pass_index, tag):
            row, seconds = measure(sspec, pass_index, tag)
            if tuple(sspec.stack) == ("amp=bf16",) and m.runs.count(("amp=bf16",)) == 1:
                row.throughput /= 3.0
            return row, seconds

        from study.core.config import RunConfig

        cfg = RunConfig(run_name="b", reports_root=str(root), profiles_root=str(root), repeats=3, stack=("auto",),
                        budget_minutes=1e5, profile=(), no_pictures=True)
        return AutoSearch(cfg, CPU2, measure=hit_once, clock=m.clock, strategy=strategy).run()

    greedy, racing = searched(GREEDY, tmp_path / "g"), searched(RACING, tmp_path / "r")
    assert greedy.stack == [] and [o.decision for o in greedy.outcomes if o.spec == "amp=bf16"] == [DROPPED]
    assert greedy.high == 1.0  # greedy's "nothing helps" claims 1.00 [1.00-1.00]
    assert racing.stack == ["amp=bf16"] and racing.low > 1.0


@pytest.mark.slow
def test_bursts_never_make_racing_say_a_tight_nothing_helps(tmp_path):
    """A machine where amp pays 1.3× under a neighbour busy a third of the time: racing may answer the
    baseline, but then with an interval that reaches what amp gains; greedy, on the same runs of
    load, says a tight "nothing helps" at least once."""
    p = Profile(name="busy", env=CPU2, base_tp=100.0, noise=0.05, startup_s=5.0, steps_s=10.0,
                bursts=Bursts(per_hour=12.0, mean_s=60.0, low=1.5, high=3.0),
                effects={"amp=bf16": 1.3, "compile": 0.97, "channels_last": 0.98, "script": 0.6, "ddp": 0.95,
                         "hogwild": 0.9, "workers": 0.99, "fused_optim": 1.0})
    greedy_wrong = 0
    for seed in range(8):
        racing = run_search(p, seed, tmp_path / f"r{seed}", strategy=RACING)
        assert not racing.wrong_nothing, (seed, racing.claimed)
        greedy_wrong += run_search(p, seed, tmp_path / f"g{seed}", strategy=GREEDY).wrong_nothing
    assert greedy_wrong >= 1  # the bursts are strong enough to fool a search that trusts them


def test_a_racing_search_resumes_where_it_stopped(tmp_path):
    p = ONLY_TOGETHER.with_(bursts=SHARED)
    whole = SimulatedMachine(p, seed=5)
    from study.core.config import RunConfig

    def cfg(root, resume=False):
        return RunConfig(run_name="q", reports_root=str(root), profiles_root=str(root), repeats=3, stack=("auto",),
                         budget_minutes=1e5, profile=(), no_pictures=True, resume=resume)

    full = AutoSearch(cfg(tmp_path / "whole"), CPU2, measure=whole.measure, clock=whole.clock).run()
    first = SimulatedMachine(p, seed=5)

    def interrupted(sspec, pass_index, tag):
        if len(first.runs) == 40:
            raise KeyboardInterrupt
        return first.measure(sspec, pass_index, tag)

    with pytest.raises(KeyboardInterrupt):
        AutoSearch(cfg(tmp_path / "cut"), CPU2, measure=interrupted, clock=first.clock).run()
    # the same machine goes on (its clock, its noise, its neighbour); only the search restarts
    resumed = AutoSearch(cfg(tmp_path / "cut", resume=True), CPU2, measure=first.measure, clock=first.clock).run()
    assert first.runs == whole.runs and resumed.stack == full.stack  # nothing finished was measured twice
    assert math.isclose(resumed.speedup, full.speedup)


def test_a_result_row_from_before_strategies_reads_as_greedy():
    from study.core.records import StageResult
    from study.search.notes import ResultNote

    old = StageResult(run="a", stage=1, name="search-result", kind="search-result",
                      notes={"search": {"rounds": 2, "stopped": "no measured candidate helped beyond noise"}})
    note = ResultNote.of(old)
    assert note.rounds == 2 and note.strategy == ""  # the report calls that greedy
    assert ResultNote.of(StageResult(run="a", stage=1, name="r", kind="search-result",
                                     notes=ResultNote(strategy="racing").as_notes())).strategy == "racing"
