"""pin: page-locked host batches and non-blocking host→device copies.

The DataLoader's pin-memory thread copies each batch into page-locked memory, so the copy to the
accelerator can be a DMA that overlaps with compute (`.to(device, non_blocking=True)` in the loop).
On a CPU-only machine there is no such copy, so the toggle does not apply.
"""
from __future__ import annotations

from optimizations.base import Env, Optimization, Plan, register
from study.core.config import RunConfig


def pin_plan(plan: Plan) -> Plan:
    """Loader settings for pinned batches; the loop reads plan.pin_memory to copy non-blocking."""
    return plan.replace(pin_memory=True)


@register
class PinMemory(Optimization):
    name = "pin"
    description = "pinned (page-locked) host batches + non-blocking host→accelerator copies"
    prior = 50
    addresses = {"data-bound": "page-locked batches copy to the device without blocking the host"}
    plans = ("pin_memory",)

    def applicable(self, env: Env) -> tuple[bool, str]:
        if env.device_type != "cuda":
            return False, "pinned memory only helps host→accelerator copies; no accelerator here"
        return True, ""

    def configure(self, plan: Plan, cfg: RunConfig, env: Env) -> Plan:
        return pin_plan(plan)
