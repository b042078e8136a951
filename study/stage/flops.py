"""Model FLOPs per sample and the device's peak, for MFU (model FLOPs utilization).

MFU = FLOPs per sample × samples/s ÷ peak FLOP/s of the devices used. FLOPs are the model's math,
counted once per stage by `torch.utils.flop_counter.FlopCounterMode` over one forward + backward of
a batch on the *meta* device (shapes only: no compute, no memory, the live model untouched), so they
are the same whatever toggles wrap the model: script/compile/amp change the speed, not the math.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from study.core.hostinfo import cpuinfo

# Dense peak TFLOP/s (no structured sparsity) from the vendors' datasheets:
#   NVIDIA H100 Tensor Core GPU datasheet (SXM5 / PCIe / NVL), H200 Tensor Core GPU datasheet (SXM / NVL),
#   A100 Tensor Core GPU datasheet, V100 Tensor Core GPU datasheet, T4 Tensor Core GPU datasheet,
#   L4 Tensor Core GPU datasheet, A10 Tensor Core GPU datasheet, L40S GPU datasheet.
# The datasheets print tensor-core figures "with sparsity" for Ampere and later; the values here are
# half of those, i.e. dense. fp32 = CUDA-core FP32; tf32 = tensor-core TF32 (used for fp32 convs /
# matmuls when cuDNN/cuBLAS TF32 is allowed); bf16/fp16 = tensor cores.
# (pattern on torch.cuda.get_device_name, label, {dtype: TFLOP/s}); first match wins.
GPU_PEAKS: list[tuple[str, str, dict[str, float]]] = [
    (r"H200.*NVL", "H200 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}),
    (r"H200", "H200 SXM", {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5}),
    (r"H100.*PCIe", "H100 PCIe", {"fp32": 51.0, "tf32": 378.0, "bf16": 756.5, "fp16": 756.5}),
    (r"H100.*NVL", "H100 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}),
    (r"H100", "H100 SXM5", {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5}),
    (r"A100", "A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}),
    (r"V100.*PCIE", "V100 PCIe", {"fp32": 14.0, "fp16": 112.0}),
    (r"V100S", "V100S PCIe", {"fp32": 16.4, "fp16": 130.0}),
    (r"V100", "V100 SXM2", {"fp32": 15.7, "fp16": 125.0}),
    (r"\bT4\b", "T4", {"fp32": 8.1, "fp16": 65.0}),
    (r"\bL4\b", "L4", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0}),
    (r"L40S", "L40S", {"fp32": 91.6, "tf32": 183.0, "bf16": 362.0, "fp16": 362.0}),
    (r"\bA10\b", "A10", {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0}),
]


# --- FLOPs --------------------------------------------------------------------------------------

def _meta_like(value: Any, batch: int) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return torch.empty((batch, *value.shape), dtype=value.dtype, device="meta")
    return torch.zeros((batch,), dtype=torch.long, device="meta")  # a plain class index


def count_flops_per_sample(cfg: Any, sample: tuple[Any, Any], num_classes: int, task: Any) -> float:
    """FLOPs of one training sample (forward + backward) of the config's model, counted on meta."""
    from torch.utils.flop_counter import FlopCounterMode

    from study.models.builtins import build_model

    batch = cfg.batch_size
    with torch.device("meta"):
        # Weights do not change the math; the file is not read.
        model = build_model(cfg.replace(weights=""), num_classes)
    model.train()
    x, y = _meta_like(sample[0], batch), _meta_like(sample[1], batch)
    counter = FlopCounterMode(display=False)
    with counter:
        loss = task.loss(model(x), y)
        loss.backward()
    return counter.get_total_flops() / max(task.samples(y), 1)  # per what the task counts (a token for a language model)


# --- peaks --------------------------------------------------------------------------------------

def gpu_peak(name: str, dtype: str, tf32: bool) -> tuple[float, str]:
    for pattern, label, peaks in GPU_PEAKS:
        if re.search(pattern, name, re.IGNORECASE):
            key = dtype
            if dtype == "fp32" and tf32 and "tf32" in peaks:
                key = "tf32"
            if key not in peaks:  # e.g. bf16 on V100/T4: no bf16 tensor cores; it runs at fp32 rate
                key = "fp32"
            return peaks[key] * 1e12, f"{label} {key} dense, vendor datasheet"
    return 0.0, f"unknown GPU {name!r}: no peak in study.stage.flops.GPU_PEAKS"


def cpu_clock_hz(info: dict[str, str]) -> tuple[float, str]:
    try:  # the maximum (boost) clock where the kernel exposes it
        khz = float(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text())
        return khz * 1e3, "cpuinfo_max_freq"
    except (OSError, ValueError):
        pass
    try:
        return float(info["cpu MHz"]) * 1e6, "/proc/cpuinfo cpu MHz"
    except (KeyError, ValueError):
        return 0.0, "unknown"


def cpu_flops_per_cycle(flags: set[str], vendor: str, family: int, dtype: str) -> tuple[int, str]:
    """fp32 FLOPs per cycle per core: 2 FMA units × vector lanes × 2 (multiply + add)."""
    if "avx512f" in flags:
        # Zen 4 (family 25) executes 512-bit ops as two 256-bit halves: AVX2 throughput.
        lanes, isa = (8, "AVX-512 on 256-bit units (Zen 4)") if vendor == "AuthenticAMD" and family == 25 \
            else (16, "AVX-512")
    elif "avx2" in flags and "fma" in flags:
        lanes, isa = 8, "AVX2+FMA"
    elif "avx" in flags:
        return 16, "AVX (no FMA: 1 add + 1 mul unit × 8 lanes)"
    else:
        return 8, "SSE (4 lanes, add + mul)"
    per_cycle = 2 * lanes * 2
    if dtype == "bf16":
        if "amx_bf16" in flags:
            return 1024, "AMX-BF16 (1024 bf16 FLOPs/cycle/core)"
        if "avx512_bf16" in flags:
            return per_cycle * 2, f"{isa} with AVX512-BF16 dot products (2× fp32)"
    return per_cycle, f"{isa}: 2 FMA × {lanes} lanes × 2"


def cpu_peak(dtype: str = "fp32") -> tuple[float, str]:
    info = cpuinfo()
    flags = set(info.get("flags", "").split())
    try:
        family = int(info.get("cpu family", "0"))
    except ValueError:
        family = 0
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:  # SMT siblings share the FMA units
        smt = max(int(info["siblings"]) // int(info["cpu cores"]), 1)
    except (KeyError, ValueError, ZeroDivisionError):
        smt = 1
    cores = max(logical // smt, 1)
    hz, clock_src = cpu_clock_hz(info)
    per_cycle, isa = cpu_flops_per_cycle(flags, info.get("vendor_id", ""), family, dtype)
    if not hz:
        return 0.0, f"CPU clock unknown; no peak ({isa})"
    peak = cores * hz * per_cycle
    return peak, (f"estimate: {cores} cores × {hz / 1e9:.2f} GHz ({clock_src}) × {per_cycle} {dtype} "
                  f"FLOPs/cycle ({isa}); an upper bound, real kernels reach well below it")


def compute_dtype(ctx: Any) -> str:
    """The dtype matmuls/convs run in under the stage's autocast: bf16, fp16 or fp32."""
    dev = ctx.device.type
    with ctx.autocast():
        if torch.is_autocast_enabled(dev):
            dt = torch.get_autocast_dtype(dev)
            return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dt, "fp32")
    return "fp32"


def device_peak(ctx: Any, model: Any = None) -> tuple[float, str, int]:
    """(peak FLOP/s of all devices the stage uses, source, number of devices)."""
    dtype = compute_dtype(ctx)
    if ctx.device.type == "cuda":
        name = torch.cuda.get_device_name(ctx.device)
        major, _ = torch.cuda.get_device_capability(ctx.device)
        # get_float32_matmul_precision reads the same setting as matmul.allow_tf32, which recent torch
        # refuses to read once the newer fp32_precision API has set it (the cudnn toggle does)
        tf32 = major >= 8 and (torch.backends.cudnn.allow_tf32 or torch.get_float32_matmul_precision() != "highest")
        per, src = gpu_peak(name, dtype, tf32)
        devices = ctx.world_size
        ids = getattr(model, "device_ids", None)  # DataParallel: one process, several GPUs
        if ctx.world_size == 1 and ids:
            devices = len(ids)
        return per * devices, f"{devices} × {src}", devices
    # CPU processes of one node share its cores: the node's peak, once per node.
    nodes = max(getattr(ctx.cfg, "nnodes", 1), 1)
    per, src = cpu_peak(dtype)
    return per * nodes, (f"{nodes} nodes × " if nodes > 1 else "") + src, nodes


def fill_mfu(row: Any, sess: Any) -> None:
    """Set flops_per_sample, peak_flops, peak_flops_source and mfu on a timing StageResult."""
    try:
        sample = sess.bundle.train[0]
        row.flops_per_sample = count_flops_per_sample(sess.cfg, sample, sess.bundle.num_classes, sess.state.task)
    except Exception as e:  # noqa: BLE001 — MFU is a bonus figure; its absence must not fail a stage
        row.notes = {**row.notes, "flops_error": f"{type(e).__name__}: {e}"[:300]}
        row.flops_per_sample = 0.0
    row.peak_flops, row.peak_flops_source, _ = device_peak(sess.ctx, sess.state.model)
    if row.flops_per_sample and row.peak_flops and row.throughput:
        row.mfu = row.flops_per_sample * row.throughput / row.peak_flops
