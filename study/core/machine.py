"""Env: what this machine offers, as far as toggles, the search and the advice care.

Detected once in the parent before any stage starts and recorded in config.json and in every result
row's run context, so a report reads the machine a run was measured on from its files, never from the
machine that happens to render it.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from study.core.config import ConfigError


@dataclass(frozen=True)
class Env:
    device_type: str  # "cpu" or "cuda"
    cuda_count: int
    cpu_count: int
    bf16_native: bool = False

    @classmethod
    def detect(cls, device: str = "auto") -> "Env":
        import torch

        cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
        dev = device.split(":")[0]
        device_type = ("cuda" if cuda else "cpu") if dev == "auto" else dev
        if device_type == "cuda" and not cuda:
            raise ConfigError("--device cuda asked for, but no CUDA device is visible; use --device cpu")
        bf16 = torch.cuda.is_bf16_supported() if device_type == "cuda" else cpu_has_bf16()
        return cls(device_type=device_type, cuda_count=cuda, cpu_count=os.cpu_count() or 1, bf16_native=bf16)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Env":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic on this CPU (AVX512-BF16 or AMX). Without it bf16 autocast is emulated
    and runs many times slower than fp32: the amp stage shows that, it is not hidden."""
    from study.core.hostinfo import cpuinfo

    return bool(set(cpuinfo().get("flags", "").split()) & {"avx512_bf16", "amx_bf16"})
