"""Helpers for the toggle tests: tiny in-process sessions and fake environments."""
from __future__ import annotations

from pathlib import Path

from optimizations.base import Env, configure_all, parse_stack
from study.core.config import RunConfig


def tiny_config(data_root: Path, out: Path, **changes) -> RunConfig:
    """The smallest honest training setup: tiny model, 32 px CIFAR, a few steps, one thread."""
    base = dict(model="tiny", data_root=str(data_root), batch_size=8, subset=64, val_subset=16, steps=3,
                val_steps=1, warmup=1, threads=1, run_name="t", reports_root=str(out / "reports"),
                profiles_root=str(out / "profiles"))
    return RunConfig(**{**base, **changes})


def make_session(cfg: RunConfig, stack: str | list[str] = ()):
    """Plan-time configure() then the worker's build_session, in this process (no DDP here)."""
    from study.stage.session import build_session
    from study.core.stage_spec import StageSpec

    toggles = parse_stack(stack) if stack else []
    stack_specs = tuple(t.spec for t in toggles)
    cfg = cfg.replace(stack=stack_specs)
    plan = configure_all(cfg, toggles, Env.detect(cfg.device))
    return build_session(StageSpec(index=1, name="01-test", stack=stack_specs, config=cfg, plan=plan))


def losses_on_one_batch(sess, steps: int) -> list[float]:
    """Train `steps` steps of the session on its first batch, repeated, and return the losses.

    One batch, so a falling loss says the toggle's model, context and optimizer really train
    (about 2.3 → 1.6 in 6 steps for the tiny model), not that the next batch happened to be easier."""
    batch = next(iter(sess.train_loader))
    sess.train_loader = [batch] * steps
    return [r.loss for r in sess.run_steps(steps)]


def cpu_env(cores: int = 2) -> Env:
    return Env(device_type="cpu", cuda_count=0, cpu_count=cores)


def cuda_env(gpus: int = 1, bf16: bool = True) -> Env:
    return Env(device_type="cuda", cuda_count=gpus, cpu_count=16, bf16_native=bf16)

