"""FLOPs per sample and device peaks behind MFU."""
from __future__ import annotations

import pytest
import torch

from study.config import RunConfig
from study.flops import count_flops_per_sample, cpu_flops_per_cycle, cpu_peak, gpu_peak
from study.tasks import build_task


def test_tiny_model_flops_match_a_hand_count():
    # TinyNet on 32×32: three 3×3 convs (3→16 @32², 16→32 @16², 32→64 @8²) and a 64→10 linear.
    conv1 = 2 * 3 * 9 * 16 * 32 * 32
    conv2 = 2 * 16 * 9 * 32 * 16 * 16
    conv3 = 2 * 32 * 9 * 64 * 8 * 8
    fc = 2 * 64 * 10
    forward = conv1 + conv2 + conv3 + fc
    # backward: weight and input gradients (2× forward), except the first conv's input gradient
    expected = 3 * forward - conv1
    cfg = RunConfig(model="tiny", batch_size=4)
    got = count_flops_per_sample(cfg, (torch.zeros(3, 32, 32), 0), 10, build_task("classify", 10))
    assert got == expected


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


def test_cpu_peak_is_stated_as_an_estimate():
    peak, source = cpu_peak()
    if peak:
        assert source.startswith("estimate:") and "cores" in source and "GHz" in source
