"""The sanity check: does this pipeline learn at all?

A dry run proves the pipeline runs (validation, checkpoint save and reload); it cannot say whether it
learns: seven steps of a ResNet-50 from scratch end anywhere. The classic check can: train the
baseline's model on one fixed small batch for a bounded number of steps. A pipeline that works drives
the loss far below its start and the batch's accuracy to about 1 within seconds; labels outside the
classes, a loss that ignores the model's output, frozen parameters or a transform that destroys the
signal cannot, and each is named in a one-line reason.

Three parts: judging a curve and saying why (here: torch-free rules that the stage process, the parent
and the report all read), the child pass that trains the batch (study.stage.sanity_pass, torch), and
the parent's side (study.runner.sanity_check): it starts that pass once on the baseline stage's spec
before the ladder (every dry run, or --sanity) and records one row of kind "sanity" in results.jsonl,
which the report and the exit code read.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from study.core.records import StageResult

PASS_NAME = "sanity"
KIND = "sanity"  # results.jsonl rows of the check; readers of stages and repeats never see them

BATCH = 16  # samples in the fixed batch (the stage's batch size when smaller)
MAX_STEPS = 50  # the check stops earlier as soon as the batch is learned
LOSS_FRACTION = 0.5  # the loss must end below this share of its first value
MIN_ACCURACY = 0.9  # training accuracy on the batch (pixel accuracy for segmentation), where the task has one


@dataclass(frozen=True)
class Judgement:
    passed: bool
    reason: str  # one line: the figures when it passed, what is wrong when it did not


def curve_text(losses: list[float], batch: int) -> str:
    return f"loss {losses[0]:.2f} → {losses[-1]:.2f} on one batch of {batch} in {len(losses)} steps"


def judge(losses: list[float], accuracies: list[float | None], *, batch: int, accuracy_name: str = "accuracy",
          min_accuracy: float = MIN_ACCURACY, problem: str = "") -> Judgement:
    """Whether a curve of one batch shows learning: the last loss below LOSS_FRACTION of the first, and
    (where the task has one) the last step's accuracy on the batch at least `min_accuracy`. `problem`
    is what the pass found wrong before or beside the curve (labels, inputs, gradients)."""
    if problem:
        return Judgement(False, problem + (f" ({curve_text(losses, batch)})" if len(losses) > 1 else ""))
    if not losses:
        return Judgement(False, "no training step ran")
    bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
    if bad is not None:
        return Judgement(False, f"the loss became {losses[bad]} at step {bad + 1} of {len(losses)}: diverging "
                                f"(--lr too high) or a loss that divides by zero")
    start, end = losses[0], losses[-1]
    acc = accuracies[-1] if accuracies else None
    acc_text = f", {accuracy_name} {acc:.2f}" if acc is not None else ""
    if end > LOSS_FRACTION * start:
        return Judgement(False, f"{curve_text(losses, batch)}{acc_text}; the loss must fall below half its start "
                                f"({LOSS_FRACTION * start:.2f}): --lr too small, or labels the inputs do not "
                                f"predict")
    if acc is not None and acc < min_accuracy:
        return Judgement(False, f"{accuracy_name} {acc:.2f} on the batch after {len(losses)} steps (needs "
                                f"{min_accuracy:.2f}) although the loss fell {start:.2f} → {end:.2f}: the loss "
                                f"does not reward the right labels")
    return Judgement(True, curve_text(losses, batch) + acc_text)


def learned(losses: list[float], accuracies: list[float | None], batch: int) -> bool:
    """The pass stops as soon as this holds: more steps would only spend time."""
    return judge(losses, accuracies, batch=batch).passed


# --- what the pass can find wrong before or beside the curve (each one line) ----------------------

def label_problem(labels: list[int], num_classes: int, ignore_index: int | None = None) -> str:
    """`labels`: the distinct targets of the batch; classes are 0..num_classes-1 (and ignore_index)."""
    outside = sorted(v for v in labels if not 0 <= v < num_classes and v != ignore_index)
    if not outside:
        return ""
    shown = ", ".join(str(v) for v in outside[:5]) + (", …" if len(outside) > 5 else "")
    return (f"labels outside the {num_classes} classes in the batch: {shown} (the model's classes are "
            f"0..{num_classes - 1}{f', {ignore_index} ignored' if ignore_index is not None else ''})")


def input_problem(samples: int, distinct: int, finite: bool) -> str:
    if not finite:
        return "the batch's inputs hold NaN or inf: the transform or the data is broken"
    if samples > 1 and distinct == 1:
        return (f"all {samples} inputs of the batch are identical: the transform destroys the signal, so no "
                f"model can tell the samples apart")
    return ""


def parameter_problem(trainable: int, in_optimizer: int) -> str:
    """`trainable`: model parameters with requires_grad; `in_optimizer`: how many of them the optimizer holds."""
    if trainable == 0:
        return "every parameter of the model is frozen (requires_grad is False): nothing can learn"
    if in_optimizer == 0:
        return "the optimizer holds none of the model's trainable parameters: its steps change nothing"
    return ""


def gradient_problem(loss_has_grad: bool, with_gradient: int, trainable: int, changed: int) -> str:
    """After a curve that did not fall: does the loss reach the parameters, and did the steps move them?"""
    if not loss_has_grad or with_gradient == 0:
        return ("the loss does not depend on the model's output: no parameter gets a gradient from it "
                "(a detached or constant loss)")
    if changed == 0:
        return (f"no parameter changed in the steps although {with_gradient} of {trainable} get a gradient: "
                f"the optimizer does not update them (frozen parameters, or a zero learning rate)")
    return ""


# --- the row, the line, the report -----------------------------------------------------------------

def line(row: StageResult | None) -> str:
    """The one line the console prints and the verdict opens with; empty when the check did not run."""
    if row is None:
        return ""
    s = row.notes.get("sanity") or {}
    if s.get("passed"):
        return f"Sanity check: the pipeline learns ({s.get('reason', '')}; {s.get('optimizer', '')})."
    if s:
        return f"Sanity check: the pipeline did not learn one batch: {s.get('reason', '?')}; fix it before a long run."
    return f"Sanity check: could not run: {row.error or row.reason or '?'}."


def passed(row: StageResult | None) -> bool | None:
    """True or False when the check ran (a crash of the pass counts as not learned); None when it did not."""
    if row is None:
        return None
    return bool((row.notes.get("sanity") or {}).get("passed"))


def latest(results: list[StageResult]) -> StageResult | None:
    """The run's last check, unless the baseline was measured since with another config (results.jsonl
    keeps the rows of every study under this name): a check speaks for the config it trained."""
    rows = [r for r in results if r.kind == KIND]
    base = [r for r in results if r.kind == "stage" and r.stage == 0]
    if not rows or (base and base[-1].config_hash != rows[-1].config_hash):
        return None
    return rows[-1]


def result_row(identity: dict[str, Any], payload: dict | None, error: str, started: float) -> StageResult:
    """The results.jsonl row of one check: status ok when it learned, failed when not (or when the pass
    broke); the curve's ends in first_loss/final_loss, the payload in notes["sanity"]."""
    from study.core.records import git_sha

    ident = {**identity, "name": KIND}
    if payload is None:
        return StageResult(**ident, kind=KIND, status="failed", error=error, git_sha=git_sha(), started=started,
                           finished=time.time())
    losses = payload.get("losses") or []
    accs = [a for a in payload.get("accuracies") or [] if a is not None]
    ok = bool(payload.get("passed"))
    ident["batch_size"] = payload.get("batch", ident.get("batch_size", 0))  # the fixed batch, not the stage's
    return StageResult(**ident, kind=KIND, status="ok" if ok else "failed",
                       reason="" if ok else payload.get("reason", ""), device=payload.get("device", ""),
                       metric_name=payload.get("accuracy_name", ""), metric=accs[-1] if accs else 0.0,
                       first_loss=losses[0] if losses else 0.0, final_loss=losses[-1] if losses else 0.0,
                       steps_total=len(losses), notes={"sanity": payload}, versions=payload.get("versions", {}),
                       git_sha=git_sha(), started=started, finished=time.time())
