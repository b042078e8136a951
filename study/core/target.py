"""A validation target (--until METRIC=VALUE): its parse and when a metric reaches it. Torch-free and
below the config, which checks the option's form with it; the training side is study.train.fit."""
from __future__ import annotations

import math
from dataclasses import dataclass

from study.core.errors import ConfigError

LOWER_IS_BETTER = ("perplexity", "loss")  # metric names (or their endings) where smaller is better


@dataclass(frozen=True)
class Target:
    metric: str
    value: float

    @property
    def lower_is_better(self) -> bool:
        return self.metric.endswith(LOWER_IS_BETTER)

    def reached(self, metrics: dict[str, float]) -> bool:
        got = metrics.get(self.metric)
        if got is None or not math.isfinite(got):
            return False
        return got <= self.value if self.lower_is_better else got >= self.value

    def __str__(self) -> str:
        return f"{self.metric}={self.value:g}"


def parse_target(text: str) -> Target | None:
    """`top1=0.5` → Target; "" → None; anything else a ConfigError naming the form."""
    if not text:
        return None
    metric, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not sep or not metric.strip() or not math.isfinite(number):
        raise ConfigError(f"--until {text!r} is not METRIC=VALUE; e.g. --until top1=0.5 (classification: top1, top5; "
                          f"segmentation: miou; a plug-in task: a name its metric computes)")
    return Target(metric.strip(), number)
