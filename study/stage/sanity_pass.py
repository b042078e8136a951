"""The sanity pass, in the child: the baseline's session trained on one fixed batch by the one loop's
step, driven by the one epoch driver (study.train.fit) over that batch, then judged by
study.core.sanity.

The optimizer is the stage's own: plain SGD at the user's --lr and momentum (0.01, 0.9 by default).
Measured on a shared 2-core CPU with the synthetic data, that overfits one batch well inside MAX_STEPS
for every built-in model, so the check needs no larger rate and no Adam: tiny, 16 samples: loss 2.30 →
0.45 in 31 steps, accuracy 1.00 (2 s quiet, 30 s with the cores busy elsewhere); resnet50 at 32 px, 16
samples: 3.04 → 0.07 in 8 steps, accuracy 1.00 (29 s at a load of 6); deeplabv3_resnet101 at 64 px, 4
samples: 0.88 → 0.21 in 12 steps, pixel accuracy 0.90 (110 s at a load of 6). A stage's optimizer that
cannot fit 16 samples at its own settings is worth knowing about before a long run.

Accuracy is taken from the same forward pass as the step's loss, in training mode: evaluation mode
would judge BatchNorm's running statistics, which a few steps have not settled (ResNet-50's batch read
0.25-0.6 in evaluation mode when training mode read 1.00).
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import torch

from study.core import sanity
from study.core.faults import one_line
from study.train.fit import StopPolicy, fit
from study.train.loop import TrainState
from study.core.stage_spec import StageSpec
from study.train.tasks import IGNORE_INDEX, Classification, Segmentation, logits_of


def accuracy_name(task: Any) -> str:
    if isinstance(task, Classification):
        return "accuracy"
    if isinstance(task, Segmentation):
        return "pixel accuracy"
    return ""  # a plug-in task is judged by its loss alone


def accuracy_of(task: Any, output: Any, target: torch.Tensor) -> float | None:
    """Share of the batch's targets the output gets right (labelled pixels for segmentation)."""
    if not accuracy_name(task):
        return None
    pred = logits_of(output).detach().argmax(1)
    if isinstance(task, Segmentation):
        keep = target != IGNORE_INDEX
        return float(((pred == target) & keep).sum()) / max(int(keep.sum()), 1)
    return float((pred == target).float().mean())


class Watched:
    """The stage's task with the same loss, noting the accuracy of each output the step's loss is
    computed from: the accuracy of the batch at that step, with no extra forward pass."""

    def __init__(self, task: Any) -> None:
        self.inner = task
        self.accuracies: list[float | None] = []

    def loss(self, output: Any, target: torch.Tensor) -> torch.Tensor:
        self.accuracies.append(accuracy_of(self.inner, output, target))
        return self.inner.loss(output, target)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def trainable(s: TrainState) -> list[torch.nn.Parameter]:
    return [p for p in s.base_model.parameters() if p.requires_grad]


def fingerprint(params: list[torch.Tensor]) -> torch.Tensor:
    """Two sums per parameter: any update moves at least one of them (no copy of the weights kept)."""
    with torch.no_grad():
        return torch.stack([torch.stack([p.double().sum(), p.double().abs().sum()]) for p in params]) \
            if params else torch.zeros(0, 2)


def before_training(s: TrainState, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> str:
    """What makes learning impossible, found from the batch and the parameters alone."""
    task = s.task
    if accuracy_name(task):
        ignore = IGNORE_INDEX if isinstance(task, Segmentation) else None
        found = sanity.label_problem([int(v) for v in torch.unique(y).tolist()], num_classes, ignore)
        if found:
            return found
    flat = x.reshape(x.shape[0], -1)
    distinct = 1 if bool((flat == flat[:1]).all()) else x.shape[0]
    found = sanity.input_problem(int(x.shape[0]), distinct, bool(torch.isfinite(x).all()))
    if found:
        return found
    params = trainable(s)
    held = {id(p) for g in s.optimizer.param_groups for p in g["params"]}
    return sanity.parameter_problem(len(params), sum(id(p) in held for p in params))


def gradient_probe(s: TrainState, batch: Any) -> tuple[bool, int]:
    """(does the loss carry a gradient, how many trainable parameters get a non-zero one)."""
    x, y = s.to_device(batch)
    s.model.train()
    with s.ctx.autocast():
        loss = s.task.loss(s.model(x), y)
    if not loss.requires_grad:
        return False, 0
    params = trainable(s)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return True, sum(1 for g in grads if g is not None and bool(g.abs().sum() > 0))


def check(s: TrainState, batch: Any, num_classes: int, max_steps: int = sanity.MAX_STEPS) -> dict[str, Any]:
    """Train `s` on `batch` for at most `max_steps` steps (fewer once it is learned) and judge it.
    The payload: passed, the one-line reason, the curve and what it was trained with."""
    x, y = batch
    n = int(y.shape[0])
    name = accuracy_name(s.task)
    t0 = time.perf_counter()
    losses: list[float] = []
    accs: list[float | None] = []
    problem = before_training(s, x, y, num_classes)
    if not problem:
        params = trainable(s)
        start = fingerprint(params)
        task, watched = s.task, Watched(s.task)
        s.task = watched
        learned = StopPolicy(steps=max_steps, done=lambda r: sanity.learned(losses, watched.accuracies[:len(losses)], n))
        try:  # the one batch is the whole loader: one step an epoch, the same batch every step
            fit(s, [batch], None, learned, hooks=[lambda rec: losses.append(rec.loss)])
        except Exception as e:  # noqa: BLE001 — a step that raises is one of the answers
            problem = f"a training step failed: {one_line(f'{type(e).__name__}: {e}', 240)}"
        finally:
            s.task = task
            accs = watched.accuracies[:len(losses)]
        if not sanity.judge(losses, accs, batch=n, accuracy_name=name).passed:
            changed = int((fingerprint(params) != start).any(dim=1).sum()) if len(params) else 0
            try:
                has_grad, with_grad = gradient_probe(s, batch)
                problem = sanity.gradient_problem(has_grad, with_grad, len(params), changed) or problem
            except Exception:  # noqa: BLE001 — the step's own error (kept above) says more
                pass
    verdict = sanity.judge(losses, accs, batch=n, accuracy_name=name, problem=problem)
    group = s.optimizer.param_groups[0] if s.optimizer.param_groups else {}
    opt = f"{type(s.optimizer).__name__} lr {group.get('lr', '?')}"
    if group.get("momentum"):
        opt += f" momentum {group['momentum']}"
    return {"passed": verdict.passed, "reason": verdict.reason, "losses": [round(v, 5) for v in losses],
            "accuracies": [None if a is None else round(a, 4) for a in accs], "accuracy_name": name,
            "batch": n, "steps": len(losses), "max_steps": max_steps, "seconds": round(time.perf_counter() - t0, 2),
            "optimizer": opt, "num_classes": num_classes, "chance_loss": math.log(num_classes) if num_classes > 1 else 0.0,
            "loss_fraction": sanity.LOSS_FRACTION, "min_accuracy": sanity.MIN_ACCURACY if name else None,
            "device": str(s.ctx.device)}


def run(spec: StageSpec) -> dict[str, Any]:
    """The pass: the stage's session at a batch of at most sanity.BATCH, its first training batch, check."""
    from study.core.records import versions
    from study.stage.session import build_session

    cfg = spec.config
    sess = build_session(replace(spec, config=cfg.replace(batch_size=min(cfg.batch_size, sanity.BATCH))))
    batch = next(iter(sess.train_loader))  # drawn once (augmentation included), then fixed
    return {**check(sess.state, batch, sess.bundle.num_classes), "stage": spec.name, "versions": versions()}
