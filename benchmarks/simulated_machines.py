"""Simulated machines for the search benchmark: profiles shaped on what the project measured (this
2-core CPU, ResNet-18 and ResNet-50 at one thread), one on published GPU figures (ResNet-50 on an
A100-class GPU), and random ones drawn from the registry's candidates of a random machine.

Each figure is a factor on samples/s; where a measured figure is a whole stack's (hogwild=2+amp=bf16
at 1.77× while amp alone gained nothing), the pair factor is what makes the product match it.
"""
from __future__ import annotations

import math
import random

from optimizations.base import Env, candidates, toggle_name
from benchmarks.simulated_search import Bursts, Profile

CPU2 = Env(device_type="cpu", cuda_count=0, cpu_count=2, bf16_native=True)
CPU2_NO_BF16 = Env(device_type="cpu", cuda_count=0, cpu_count=2, bf16_native=False)
CPU8 = Env(device_type="cpu", cuda_count=0, cpu_count=8, bf16_native=True)
GPU1 = Env(device_type="cuda", cuda_count=1, cpu_count=8, bf16_native=True)
SHARED = Bursts(per_hour=6.0, mean_s=120.0, low=1.3, high=3.0)  # another tenant on a shared machine


def cpu_resnet18() -> Profile:
    """This machine's figures (2 shared cores, --threads 1): baseline about 250 samples/s (the overhead
    table: 240-253); ddp=2 1.16× (the scaling table, 1.14-1.18); hogwild=2 1.18-1.23× and
    hogwild=2+amp=bf16 1.77× with amp alone no gain (two searches); data wait 6.6 ms of a 134 ms step;
    run-to-run noise a few per cent (the overhead rounds spread 0.94-1.08). What was not measured
    beyond noise (compile, fused_optim, channels_last, script) is neutral; a loader process takes a few
    per cent of the trainer's two shared cores (a guess)."""
    return Profile(
        name="cpu-resnet18 (measured)", env=CPU2, base_tp=262.0, data_tp=32 / 0.0066,
        effects={"hogwild=2": 1.20, "ddp=2": 1.16, "workers=1": 0.97, "workers=2": 0.94},
        data_effects={"workers": 8.0}, overlap=("workers",), pairs={("hogwild", "amp"): 1.77 / 1.20},
        noise=0.04, startup_s=6.0, steps_s=10 * 32 / 250, source="this CPU: overhead, scaling and search runs")


def cpu_resnet50() -> Profile:
    """ResNet-50 on the same CPU at one thread: baseline about 84 samples/s (the overhead table); the
    parallel toggles' and amp's factors taken over from ResNet-18 (not measured on ResNet-50)."""
    p = cpu_resnet18()
    return p.with_(name="cpu-resnet50 (measured base)", base_tp=86.0, data_tp=32 / 0.0066, steps_s=10 * 32 / 84,
                   startup_s=9.0, source="this CPU: the overhead table's ResNet-50 baseline")


def gpu_resnet50() -> Profile:
    """ResNet-50 on one A100-class GPU, batch 256, ImageNet-size JPEGs, as vendors publish it: AMP about
    2.5× FP32 (TF32 alone about 1.5×, and none of it left once AMP computes in 16 bits); channels_last
    about 1.25× with AMP, nothing without; torch.compile about 1.1× in FP32 and 1.3× with AMP; a cold
    compile about 1.5 min (the registry's figure); the loader in the training process about 400
    images/s, so the baseline is data-bound and workers pay first."""
    return Profile(
        name="gpu-resnet50 (published)", env=GPU1, base_tp=700.0, data_tp=400.0, overlap=("workers",),
        effects={"amp=bf16": 2.5, "amp=fp16": 2.45, "cudnn": 1.5, "channels_last": 0.98, "compile=default": 1.10,
                 "compile=reduce-overhead": 1.09, "compile=max-autotune": 1.14, "fused_optim": 1.02, "pin": 1.01,
                 "script": 0.97},
        data_effects={"workers=2": 2.0, "workers=4": 4.0, "workers=8": 7.5, "pin": 1.03},
        pairs={("amp", "cudnn"): 1.05 / 1.5, ("amp", "channels_last"): 1.25, ("amp", "compile"): 1.18,
               ("channels_last", "compile"): 0.97},
        noise=0.015, startup_s=30.0, steps_s=100 * 256 / 700, batch_size=256,
        source="published ResNet-50 training figures (AMP, channels_last, torch.compile)")


def measured_profiles() -> list[Profile]:
    return [cpu_resnet18(), cpu_resnet50(), gpu_resnet50()]


def random_profile(rng: random.Random, index: int = 0) -> Profile:
    """A random machine: its kind, each toggle's effect, a few pairs that only pay together, cancel or
    add, now and then a toggle or a pair that fails, a data-bound loader, noise and run times."""
    env = rng.choice([CPU2, CPU2_NO_BF16, CPU8, GPU1, GPU1])
    specs = candidates(env)
    names = sorted({toggle_name(s) for s in specs})
    effects: dict[str, float] = {}
    for name in names:
        u = rng.random()
        values = [s for s in specs if toggle_name(s) == name]
        if u < 0.6:  # pays (35 %) or hurts (25 %) here; its values differ a little
            main = math.exp(rng.uniform(0.05, 0.5)) if u < 0.35 else math.exp(rng.uniform(-1.2, -0.05))
            effects.update({s: main * math.exp(rng.gauss(0.0, 0.05)) for s in values})
        else:  # does about nothing here, whatever its value
            effects.update({s: math.exp(rng.gauss(0.0, 0.015)) for s in values})
    pairs: dict[tuple[str, str], float] = {}
    for _ in range(min(_poisson(rng, 1.5), 4)):
        a, b = rng.sample(names, 2)
        spec_a = next(s for s in specs if toggle_name(s) == a)
        if not any(toggle_name(s) == b for s in candidates(env, [spec_a])):
            continue  # a conflict: the two never meet in a stack
        kind = rng.random()
        if kind < 0.4:  # pays only together
            for s in specs:
                if toggle_name(s) in (a, b):
                    effects[s] = math.exp(rng.gauss(-0.03, 0.03))
            pairs[(a, b)] = math.exp(rng.uniform(0.15, 0.5))
        elif kind < 0.8:  # cancel: together they keep about one gain, or lose some
            pairs[(a, b)] = math.exp(-rng.uniform(0.05, 0.35))
        else:  # add to each other
            pairs[(a, b)] = math.exp(rng.uniform(0.05, 0.3))
    fails: list[tuple[str, ...]] = []
    if rng.random() < 0.2:
        fails.append((rng.choice(names),))
    if rng.random() < 0.2:
        fails.append(tuple(rng.sample(names, 2)))
    base = rng.uniform(50.0, 3000.0)
    data_bound = rng.random() < 0.3
    loader = {s: float(s.partition("=")[2] or 1) * rng.uniform(0.6, 1.0) for s in specs if toggle_name(s) == "workers"}
    return Profile(
        name=f"random-{index}", env=env, base_tp=base, effects=effects, pairs=pairs, fails=tuple(fails),
        data_tp=base * rng.uniform(0.5, 3.0) if data_bound else math.inf, data_effects=loader if data_bound else {},
        overlap=("workers",), noise=rng.uniform(0.01, 0.08), startup_s=rng.uniform(5.0, 30.0),
        steps_s=rng.uniform(2.0, 60.0), source="random")


def _poisson(rng: random.Random, mean: float) -> int:
    k, t = 0, rng.expovariate(1.0)
    while t < mean:
        k += 1
        t += rng.expovariate(1.0)
    return k
