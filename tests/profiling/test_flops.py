"""FLOPs per sample and device peaks behind MFU."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from optimizations.base import Env, TrainContext
from study.stage import flops
from study.core.config import RunConfig
from study.stage.flops import count_flops_per_sample, cpu_flops_per_cycle, cpu_peak, fill_mfu, gpu_peak
from study.models.builtins import TinyNet
from study.core.records import StageResult
from study.train.tasks import build_task


# TinyNet on 32×32: three 3×3 convs (3→16 @32², 16→32 @16², 32→64 @8²) and a 64→10 linear.
CONV1 = 2 * 3 * 9 * 16 * 32 * 32
CONV2 = 2 * 16 * 9 * 32 * 16 * 16
CONV3 = 2 * 32 * 9 * 64 * 8 * 8
FC = 2 * 64 * 10
# backward: weight and input gradients (2× forward), except the first conv's input gradient
TINY_TRAIN_FLOPS = 3 * (CONV1 + CONV2 + CONV3 + FC) - CONV1


def test_tiny_model_flops_match_a_hand_count():
    cfg = RunConfig(model="tiny", batch_size=4)
    got = count_flops_per_sample(cfg, (torch.zeros(3, 32, 32), 0), 10, build_task("classify", 10))
    assert got == TINY_TRAIN_FLOPS == 15_929_088


def test_flops_follow_the_input_size_and_what_trains():
    """The count follows the graph autograd really runs: 64 px inputs give every conv 4x the work;
    a frozen backbone computes no gradient before the head (forward, plus the head's weight gradient)."""
    task = build_task("classify", 10)
    big = count_flops_per_sample(RunConfig(model="tiny", batch_size=2), (torch.zeros(3, 64, 64), 0), 10, task)
    assert big == 3 * 4 * (CONV1 + CONV2 + CONV3) - 4 * CONV1 + 3 * FC
    frozen = count_flops_per_sample(RunConfig(model="tiny", batch_size=2, freeze_backbone=True),
                                    (torch.zeros(3, 32, 32), 0), 10, task)
    assert frozen == CONV1 + CONV2 + CONV3 + 2 * FC


def test_gpu_peaks_come_from_the_table():
    assert gpu_peak("NVIDIA H100 80GB HBM3", "bf16", tf32=True)[0] == pytest.approx(989.5e12)
    assert gpu_peak("NVIDIA H100 PCIe", "fp32", tf32=True)[0] == pytest.approx(378e12)
    assert gpu_peak("NVIDIA H100 PCIe", "fp32", tf32=False)[0] == pytest.approx(51e12)
    assert gpu_peak("NVIDIA A100-SXM4-80GB", "fp16", tf32=True)[0] == pytest.approx(312e12)
    v100, src = gpu_peak("Tesla V100-SXM2-16GB", "bf16", tf32=False)
    assert v100 == pytest.approx(15.7e12) and "fp32" in src  # no bf16 tensor cores
    assert gpu_peak("NVIDIA GeForce GTX 1080", "fp32", tf32=False)[0] == 0.0


def test_cpu_flops_per_cycle_from_isa_flags():
    assert cpu_flops_per_cycle({"avx512f", "avx2", "fma"}, "GenuineIntel", 6, "fp32")[0] == 64
    assert cpu_flops_per_cycle({"avx512f", "avx2", "fma"}, "AuthenticAMD", 25, "fp32")[0] == 32  # Zen 4
    assert cpu_flops_per_cycle({"avx2", "fma"}, "AuthenticAMD", 23, "fp32")[0] == 32
    assert cpu_flops_per_cycle({"avx"}, "GenuineIntel", 6, "fp32")[0] == 16
    assert cpu_flops_per_cycle({"avx512f", "amx_bf16"}, "GenuineIntel", 6, "bf16")[0] == 1024


def _fake_cpu(monkeypatch, hz: float) -> None:
    """A 2-core, 4-thread AVX2+FMA CPU at `hz` (0: clock unknown), whatever this machine is."""
    info = {"flags": "sse2 avx avx2 fma", "vendor_id": "GenuineIntel", "cpu family": "6",
            "siblings": "4", "cpu cores": "2"}
    monkeypatch.setattr(flops, "cpuinfo", lambda: info)
    monkeypatch.setattr(flops, "cpu_clock_hz", lambda _info: (hz, "test clock" if hz else "unknown"))
    monkeypatch.setattr(flops.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)


def test_cpu_peak_counts_physical_cores_clock_and_vector_width(monkeypatch):
    _fake_cpu(monkeypatch, 2.0e9)
    peak, source = cpu_peak()
    assert peak == 2 * 2.0e9 * 32  # SMT siblings share the FMA units: 2 cores, not 4
    assert source.startswith("estimate:") and "2 cores" in source and "2.00 GHz" in source


def test_cpu_peak_without_a_clock_is_zero_and_says_why(monkeypatch):
    _fake_cpu(monkeypatch, 0.0)
    peak, source = cpu_peak()
    assert peak == 0.0 and "clock unknown" in source


class Clocks:
    """Stands in for pathlib.Path in flops: the kernel's cpufreq file holds `max_khz` (None: no such file)."""

    def __init__(self, max_khz: str | None) -> None:
        self.max_khz = max_khz

    def __call__(self, path: str) -> "Clocks":
        assert path.endswith("cpufreq/cpuinfo_max_freq"), path
        return self

    def read_text(self) -> str:
        if self.max_khz is None:
            raise FileNotFoundError("no cpufreq here")
        return self.max_khz


def test_the_peak_takes_the_boost_clock_a_matmul_may_run_at(monkeypatch):
    """The peak is an upper bound, so it is counted at the highest clock a core reaches (the kernel's
    cpuinfo_max_freq), never the current one /proc/cpuinfo shows, which a boosted matmul beats; without
    the kernel's figure it falls back to cpuinfo's, and without either there is no peak."""
    info = {"cpu MHz": "1200.000"}
    monkeypatch.setattr(flops, "Path", Clocks("3500000"))
    assert flops.cpu_clock_hz(info) == (3.5e9, "cpuinfo_max_freq")
    monkeypatch.setattr(flops, "Path", Clocks("garbage"))
    assert flops.cpu_clock_hz(info)[0] == 1.2e9
    monkeypatch.setattr(flops, "Path", Clocks(None))
    assert flops.cpu_clock_hz(info)[0] == 1.2e9 and flops.cpu_clock_hz({})[0] == 0.0
    # through cpu_peak: the same CPU counted at its boost clock
    monkeypatch.setattr(flops, "Path", Clocks("3500000"))
    monkeypatch.setattr(flops, "cpuinfo", lambda: {**info, "flags": "avx2 fma", "siblings": "2", "cpu cores": "2"})
    monkeypatch.setattr(flops.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    assert flops.cpu_peak()[0] == 2 * 3.5e9 * 32


def _session(device: str = "cpu", model=None, **ctx):
    """What fill_mfu reads from a stage session: a tiny model, one 32 px CIFAR sample."""
    cfg = RunConfig(model="tiny", batch_size=4, device="cpu")
    ctx = TrainContext(cfg=cfg, env=Env(device_type="cpu", cuda_count=0, cpu_count=2), device=torch.device(device),
                       **ctx)
    task = build_task("classify", 10)
    return SimpleNamespace(cfg=cfg, ctx=ctx, bundle=SimpleNamespace(train=[(torch.zeros(3, 32, 32), 3)], num_classes=10),
                           state=SimpleNamespace(task=task, model=model if model is not None else TinyNet(10)))


def at_peak(devices: int, peak: float) -> StageResult:
    """A stage whose samples/s carry the model's FLOPs at exactly `devices` × `peak` FLOP/s."""
    return StageResult(run="r", stage=0, name="00-x", throughput=devices * peak / TINY_TRAIN_FLOPS)


def test_mfu_is_one_for_a_stage_at_its_devices_peak(monkeypatch):
    """Stages planted to run exactly at the peak of what they use read 100 %: one CPU; two DDP ranks
    sharing one CPU node (its peak counted once); two GPUs under DDP or under DataParallel (each GPU's
    datasheet peak, TF32 for fp32 on an H100); the peak comes from the table, not from the test."""
    monkeypatch.setattr(flops, "cpu_peak", lambda dtype="fp32": (1e12, "test peak"))
    row = at_peak(1, 1e12)
    fill_mfu(row, _session())
    assert row.flops_per_sample == TINY_TRAIN_FLOPS and row.peak_flops_source == "test peak"
    assert row.mfu == pytest.approx(1.0)
    half = StageResult(run="r", stage=0, name="00-x", throughput=row.throughput / 2)
    fill_mfu(half, _session(world_size=2))  # two ranks on one node, together at half its peak
    assert half.peak_flops == 1e12 and half.mfu == pytest.approx(0.5)

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    h100_tf32 = 494.5e12
    ddp = at_peak(2, h100_tf32)
    fill_mfu(ddp, _session("cuda", world_size=2))
    assert ddp.peak_flops == pytest.approx(2 * h100_tf32) and ddp.mfu == pytest.approx(1.0)
    assert ddp.peak_flops_source.startswith("2 × ")
    dp = at_peak(2, h100_tf32)
    fill_mfu(dp, _session("cuda", model=SimpleNamespace(device_ids=[0, 1])))
    assert dp.peak_flops == pytest.approx(2 * h100_tf32) and dp.mfu == pytest.approx(1.0)


def test_mfu_is_absent_when_the_peak_is_unknown(monkeypatch):
    monkeypatch.setattr(flops, "cpu_peak", lambda dtype="fp32": (0.0, "CPU clock unknown; no peak"))
    row = StageResult(run="r", stage=0, name="00-base", throughput=500.0)
    fill_mfu(row, _session())
    assert row.flops_per_sample == TINY_TRAIN_FLOPS  # the model's math is still counted
    assert row.peak_flops == 0.0 and "unknown" in row.peak_flops_source
    assert row.mfu == 0.0  # a record's "no value": the report shows "–", never a made-up ratio
