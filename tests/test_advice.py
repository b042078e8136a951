"""Verdict rules and advice on hand-made figures: each rule fires on one stage and stays quiet on another."""
from __future__ import annotations

import pytest

from optimizations.base import Env
from study.advice import (RULES, Measured, advise, candidates, diagnose, evidence_of, ladder_measurements,
                          order_candidates, python_share, refutations, stage_verdict)
from study.core.records import StageResult

CPU = Env(device_type="cpu", cuda_count=0, cpu_count=2, bf16_native=True)
CPU_NO_BF16 = Env(device_type="cpu", cuda_count=0, cpu_count=2, bf16_native=False)
GPU = Env(device_type="cuda", cuda_count=1, cpu_count=16, bf16_native=True)


def stage(name="01-x", stack=(), device="cpu", **figures) -> StageResult:
    """An ok stage row with a 100 ms step: 5 data, 60 forward+backward... as the figures say."""
    base = dict(run="r", stage=1, name=name, stack=list(stack), device=device, status="ok", throughput=320.0,
                throughput_ci_low=310.0, throughput_ci_high=330.0, t_data=0.005, t_h2d=0.0, t_forward=0.035,
                t_backward=0.055, t_optimizer=0.005, data_wait_share=0.05, step_time_p50=0.1)
    base.update(figures)
    return StageResult(**base)


def trace(step=100.0, device_events=False, **cats) -> dict:
    return {"step_ms_mean": step, "device_events": device_events, "categories_ms": cats}


def cprofile(python_ms: float, total_ms: float = 100.0) -> dict:
    """cProfile's table for one step: one Python function of `python_ms` own time, the rest in C."""
    return {"steps": 1, "total_s": total_ms / 1000, "by_tottime": [
        {"function": "run_backward", "file": "~", "tottime_ms": total_ms - python_ms},
        {"function": "forward", "file": "/x/model.py", "tottime_ms": python_ms}]}


# (rule index in RULES, evidence that fires it, evidence that does not)
CASES = {
    "data-bound": (dict(row=stage(data_wait_share=0.30)), dict(row=stage(data_wait_share=0.02))),
    "host-bound/device idle": (dict(row=stage(device="cuda:0"), trace=trace(kernel=40.0, device_events=True)),
                               dict(row=stage(device="cuda:0"), trace=trace(kernel=90.0, device_events=True))),
    "host-bound/python": (dict(row=stage(), cprofile=cprofile(35.0)), dict(row=stage(), cprofile=cprofile(5.0))),
    "optimizer-heavy": (dict(row=stage(t_optimizer=0.03)), dict(row=stage(t_optimizer=0.005))),
    "compute-bound/mfu": (dict(row=stage(mfu=0.55)), dict(row=stage(mfu=0.20))),
    "compute-bound/ops": (dict(row=stage(), trace=trace(cpu_exec=90.0)), dict(row=stage(), trace=trace(cpu_exec=50.0))),
    "communication-bound": (dict(row=stage(world_size=2), trace=trace(cpu_exec=60.0, communication=30.0)),
                            dict(row=stage(world_size=2), trace=trace(cpu_exec=60.0, communication=5.0))),
    "memory-bound": (dict(row=stage(device="cuda:0", peak_memory_mb=7400.0, memory_capacity_mb=8000.0)),
                     dict(row=stage(device="cuda:0", peak_memory_mb=2000.0, memory_capacity_mb=8000.0))),
}
RULE_OF = dict(zip(CASES, RULES))


def test_every_rule_has_a_case():
    assert len(CASES) == len(RULES)
    for key, rule in RULE_OF.items():
        assert key.split("/")[0] == rule.bottleneck


@pytest.mark.parametrize("key", list(CASES))
def test_rule_fires_on_its_figure(key):
    rule = RULE_OF[key]
    fires, quiet = CASES[key]
    assert rule in [f.rule for f in diagnose(evidence_of(**fires))]
    assert rule not in [f.rule for f in diagnose(evidence_of(**quiet))]


def test_gpu_idle_rule_is_silent_without_device_events():
    ev = evidence_of(stage(), trace(cpu_exec=40.0))  # a CPU trace has no kernels to be idle between
    assert ev.device_idle_share is None


def test_communication_needs_more_than_one_process():
    ev = evidence_of(stage(world_size=1), trace(cpu_exec=60.0, communication=30.0))
    assert ev.comm_share is None


def test_host_memory_counts_every_process_of_the_node():
    one = evidence_of(stage(peak_memory_mb=3000.0, memory_capacity_mb=8000.0))
    two = evidence_of(stage(peak_memory_mb=3000.0, memory_capacity_mb=8000.0, world_size=2))
    assert one.memory_share == pytest.approx(0.375) and two.memory_share == pytest.approx(0.75)


def test_python_share_counts_only_python_functions():
    assert python_share(cprofile(25.0)) == pytest.approx(0.25)
    assert python_share({"steps": 0}) is None


def test_findings_most_severe_first_and_ceiling_from_the_share():
    found = diagnose(evidence_of(stage(data_wait_share=0.5, t_optimizer=0.02)))
    assert [f.rule.bottleneck for f in found] == ["data-bound", "optimizer-heavy"]
    assert found[0].ceiling == pytest.approx(2.0)


def test_advice_follows_the_finding_and_skips_the_stack():
    ev = evidence_of(stage(data_wait_share=0.4, stack=("workers=2",)))
    advice = advise(ev, diagnose(ev), CPU)
    assert not any(a.toggle.startswith("workers") for a in advice)  # in the stack already
    assert not any(a.toggle == "pin" for a in advice)  # no accelerator here


def test_advice_on_a_data_bound_gpu_stage_names_workers_then_pin():
    ev = evidence_of(stage(device="cuda:0", data_wait_share=0.4))
    toggles = [a.toggle for a in advise(ev, diagnose(ev), GPU)]
    assert toggles[:4] == ["workers=2", "workers=4", "workers=8", "pin"]


def test_bf16_is_advised_only_where_the_cpu_has_it():
    ev = evidence_of(stage(mfu=0.6))
    assert "amp=bf16" in [a.toggle for a in advise(ev, diagnose(ev), CPU)]
    assert not any(a.toggle.startswith("amp") for a in advise(ev, diagnose(ev), CPU_NO_BF16))


def test_conflicting_toggles_are_not_candidates():
    assert "script" in candidates(CPU)
    assert "script" not in candidates(CPU, ["compile"])
    assert not any(s.startswith("compile") for s in candidates(CPU, ["script"]))
    assert "pin" not in candidates(CPU) and "dp" not in candidates(GPU)  # need an accelerator / 2 GPUs


def test_advice_the_ladder_refuted_says_so_and_comes_last():
    base = stage("00-base", stage=0, throughput=100.0, throughput_ci_low=95.0, throughput_ci_high=105.0)
    amp = stage("01-amp", stack=("amp",), throughput=101.0, throughput_ci_low=96.0, throughput_ci_high=106.0)
    refuted = refutations(ladder_measurements([base, amp]))
    assert refuted["amp"].where == "stage 01-amp" and not refuted["amp"].gained
    ev = evidence_of(stage(mfu=0.6))  # compute-bound: amp, compile, channels_last in prior order
    v = stage_verdict(ev, CPU, refuted)
    assert [a.toggle for a in v.advice] == ["compile=default", "channels_last", "amp=bf16"]
    assert v.advice[-1].refuted is refuted["amp"]


def test_a_later_gain_lifts_a_refutation():
    got = refutations([Measured("amp=bf16", "search round 1", 0.98, 0.9, 1.05),
                       Measured("amp=bf16", "search round 2", 1.3, 1.2, 1.4)])
    assert "amp=bf16" not in got


def test_search_order_puts_what_the_findings_point_at_first():
    ev = evidence_of(stage(t_optimizer=0.04))
    order = order_candidates(candidates(CPU), diagnose(ev))
    # optimizer-heavy's fixes in prior order (a larger batch spreads the update too), then the rest
    assert order[:2] == ["fused_optim", "batch=x2"] and order[2:4] == ["amp=bf16", "compile=default"]


def test_each_advised_toggle_says_its_own_reason():
    """A rule advising several toggles says why each helps, not one sentence for all of them."""
    for rule in RULES:
        reasons = [rule.effect_of(t) for t in rule.fixes]
        if len(reasons) > 1:
            assert len(set(reasons)) == len(reasons), (rule.bottleneck, reasons)
        for toggle, reason in zip(rule.fixes, reasons):
            assert reason.startswith(rule.effect)
    compute = next(r for r in RULES if r.bottleneck == "compute-bound")
    assert "bf16" in compute.effect_of("amp=bf16") and "bf16" not in compute.effect_of("channels_last")
