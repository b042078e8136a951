"""What the Quality table's figures can and cannot say: a dry run's handful of steps, what a full epoch
of the data reaches, and where the loss started against a uniform guess, ln(classes)."""
from __future__ import annotations

import math

from study.core import sanity
from study.report.ladder import LOSS_RISE, is_ablation
from study.report.reading import RunData

# What one full epoch reached, measured once per (task, dataset, model) the dry run trains; the figures
# and how they were measured, so a reader of a dry run's 7 steps knows what "learning" looks like here.
FULL_EPOCH = {
    ("classify", "cifar10", "resnet50"): (
        "one full epoch of the synthetic CIFAR-10 set that `prepare.sh --synthetic` writes (2000 images, 62 steps "
        "of 32, plain SGD lr 0.01 momentum 0.9, 32 px) took resnet50 to top-1 0.566 (top-5 0.944) on its 500 "
        "validation images; its training loss started at 2.65, rose to between 4 and 12 over the first 30 steps "
        "and ended at 1.2–1.6 (measured on a 2-core CPU in 5 minutes with `python -m study --model resnet50 "
        "--data-root data --epochs 1 --no-pictures --profile ''`)"),
}

# A first loss this far from ln(classes), either way, is worth a look before any figure of the run.
START_FAR = 2.0


def num_classes(run: RunData) -> int:
    """From the sanity check's payload, else from the pictures' class list; 0 when neither says."""
    row = sanity.latest(run.results)
    n = ((row.notes.get("sanity") or {}).get("num_classes") if row is not None else None) or 0
    if not n:
        n = len(run.pictures().get("classes") or [])
    return int(n)


def notes(run: RunData) -> list[str]:
    ok = [r for r in run.ok if not is_ablation(r)]
    if not ok:
        return []
    cfg = run.config.get("config", {})
    base = next((r for r in ok if r.stage == 0), ok[0])
    out = []
    if cfg.get("dry_run"):
        ref = FULL_EPOCH.get((base.task, base.dataset, base.model))
        out.append(f"A dry run trains {base.steps_total} steps of {base.batch_size} per process: too few to learn, so "
                   f"these figures show that training, validation and the checkpoint run, not what the model "
                   f"learns; whether it learns is the sanity check's answer (Verdict). "
                   + (f"For reference, {ref}." if ref else
                      "Run `--epochs 1` without --dry-run to see what a full epoch of this data reaches."))
    classes = num_classes(run)
    if base.first_loss > 0 and classes > 1:
        chance = math.log(classes)
        ratio = base.first_loss / chance
        if ratio > START_FAR:
            how = ("far above it: the untrained model is very sure of wrong classes (a head initialised at a large "
                   "scale), or the loss is not a mean cross-entropy")
        elif ratio < 1 / START_FAR:
            how = ("far below it before any training: the labels can be read off the input (a leak), or the loss "
                   "is not a cross-entropy")
        else:
            how = ("near it, as an untrained model starts (a fresh random head adds a little: ResNet-50 starts at "
                   "2.6–3.5 for 10 classes)")
        out.append(f"The first training step's loss, {base.first_loss:.2f} ({base.name}), against ln({classes}) = "
                   f"{chance:.2f}, the loss of a uniform guess over the classes: {how}.")
    rose = [r for r in ok if r.first_loss > 0 and r.final_loss > LOSS_RISE * r.first_loss]
    if rose:
        out.append(", ".join(f"{r.name} ({r.first_loss:.2f} → {r.final_loss:.2f})" for r in rose)
                   + f": the loss ended above {LOSS_RISE:g}× its start. In the first steps of a model trained from "
                   "scratch that is the usual start, not a verdict; in a long run it means divergence (--lr) or a bug. "
                   "The sanity check on one batch tells them apart.")
    return out
