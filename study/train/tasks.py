"""What differs between classification and segmentation: output shape, loss, metrics."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

IGNORE_INDEX = 255  # Pet trimap border pixels


def logits_of(output: Any) -> torch.Tensor:
    """torchvision segmentation models return {"out": logits, "aux": ...}; classifiers a tensor."""
    return output["out"] if isinstance(output, dict) else output


class Metric:
    """Accumulates over batches; `compute()` returns a flat dict of floats."""

    name: str = ""

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError

    def state(self) -> torch.Tensor:
        """Sufficient statistics as one tensor, so ranks can all-reduce them."""
        raise NotImplementedError

    def load_state(self, t: torch.Tensor) -> None:
        raise NotImplementedError


class TopK(Metric):
    name = "top1"

    def __init__(self, num_classes: int) -> None:
        self.k = min(5, num_classes)
        self.stats = torch.zeros(3, dtype=torch.float64)  # correct@1, correct@k, count

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        topk = logits.detach().float().topk(self.k, dim=1).indices.cpu()
        target = target.detach().cpu().view(-1, 1)
        hit = topk.eq(target)
        self.stats += torch.tensor([hit[:, :1].sum().item(), hit.any(dim=1).sum().item(), target.numel()],
                                   dtype=torch.float64)

    def compute(self) -> dict[str, float]:
        n = max(self.stats[2].item(), 1.0)
        return {"top1": self.stats[0].item() / n, "top5": self.stats[1].item() / n}

    def state(self) -> torch.Tensor:
        return self.stats.clone()

    def load_state(self, t: torch.Tensor) -> None:
        self.stats = t.clone().to(torch.float64)


class IoU(Metric):
    """Per-class IoU and mIoU from a confusion matrix; ignore_index pixels are left out."""

    name = "miou"

    def __init__(self, num_classes: int) -> None:
        self.n = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        pred = logits.detach().argmax(dim=1).cpu().view(-1)
        target = target.detach().cpu().view(-1)
        keep = target != IGNORE_INDEX
        idx = target[keep] * self.n + pred[keep]
        self.confusion += torch.bincount(idx, minlength=self.n * self.n).view(self.n, self.n).double()

    def compute(self) -> dict[str, float]:
        c = self.confusion
        tp = c.diag()
        union = c.sum(0) + c.sum(1) - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
        out = {f"iou_{i}": float(v) for i, v in enumerate(iou)}
        out["miou"] = float(torch.nanmean(iou)) if torch.isfinite(iou).any() else 0.0
        out["pixel_acc"] = float(tp.sum() / c.sum().clamp(min=1))
        return out

    def state(self) -> torch.Tensor:
        return self.confusion.clone()

    def load_state(self, t: torch.Tensor) -> None:
        self.confusion = t.clone().to(torch.float64)


class Task:
    name = ""
    metric_name = ""
    metric_names: tuple[str, ...] = ()  # what compute() returns, where known: --until is checked against it

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def loss(self, output: Any, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metric(self) -> Metric:
        raise NotImplementedError

    def samples(self, target: torch.Tensor) -> int:
        return int(target.shape[0])


class Classification(Task):
    name = "classify"
    metric_name = "top1"
    metric_names = ("top1", "top5")

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        self.criterion = nn.CrossEntropyLoss()

    def loss(self, output: Any, target: torch.Tensor) -> torch.Tensor:
        return self.criterion(logits_of(output), target)

    def metric(self) -> Metric:
        return TopK(self.num_classes)


class Segmentation(Task):
    name = "segment"
    metric_name = "miou"
    metric_names = ("miou", "pixel_acc")

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        self.criterion = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)

    def loss(self, output: Any, target: torch.Tensor) -> torch.Tensor:
        return self.criterion(logits_of(output).float(), target)

    def metric(self) -> Metric:
        return IoU(self.num_classes)


# The task registry: the built-ins by name; anything else is a reference (FILE.py:CLASS or
# package.module:CLASS) to a Task subclass of the user's, imported where it is built (every stage
# process imports it again: a reference travels as a string).
TASKS: dict[str, type[Task]] = {"classify": Classification, "segment": Segmentation}


def task_class(name: str) -> type[Task]:
    """The Task class `name` stands for: a built-in, or the user's class a reference names.
    ConfigError (one line naming the reference) when it is missing or no Task subclass."""
    if name in TASKS:
        return TASKS[name]
    from study.core.config import ConfigError
    from study.core.references import resolve

    cls = resolve(name)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        what = f"class {cls.__name__}" if isinstance(cls, type) else type(cls).__name__
        raise ConfigError(f"--task {name}: it names a {what}, not a subclass of study.train.tasks.Task "
                          f"(class NAME(Task) with loss, metric and samples)")
    return cls


def build_task(name: str, num_classes: int) -> Task:
    cls = task_class(name)
    if cls in TASKS.values():
        return cls(num_classes)
    from study.core.config import ConfigError

    try:
        task = cls(num_classes)
    except Exception as e:  # noqa: BLE001 — whatever the user's constructor raises is bad input
        raise ConfigError(f"--task {name}: {cls.__name__}({num_classes}) raised {type(e).__name__}: "
                          f"{' '.join(str(e).split())[:200]}") from None
    return task
