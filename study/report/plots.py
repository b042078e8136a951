"""Report plots (matplotlib, Agg, PNG). Each function takes plain data built from results.jsonl or a
profile file of the run, writes one PNG and returns its path, or None when there is nothing to draw."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {
    "data": "#d62728", "h2d": "#ff7f0e", "forward": "#1f77b4", "backward": "#2ca02c", "optimizer": "#9467bd",
    "kernel": "#2ca02c", "memcpy": "#ff7f0e", "memset": "#bcbd22", "communication": "#17becf",
    "runtime": "#8c564b", "dataloader": "#d62728", "cpu_exec": "#1f77b4", "other": "#c7c7c7",
}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def throughput(labels: Sequence[str], values: Sequence[float | None], lows: Sequence[float | None],
               highs: Sequence[float | None], path: Path, title: str,
               missing: Sequence[str] | None = None) -> Path | None:
    """Samples/s per stage with the 95% CI as error bars; stages without a figure are marked with
    `missing[i]` (their status)."""
    if not labels or not any(v for v in values if v is not None):
        return None
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(labels) + 2), 4))
    xs = range(len(labels))
    vals = [v or 0.0 for v in values]
    err_lo = [max(v - lo, 0.0) if v and lo is not None else 0.0 for v, lo in zip(vals, lows)]
    err_hi = [max(hi - v, 0.0) if v and hi is not None else 0.0 for v, hi in zip(vals, highs)]
    ax.bar(xs, vals, color="#1f77b4", yerr=[err_lo, err_hi], capsize=4, ecolor="#333")
    top = max(vals) or 1.0
    for x, v in zip(xs, values):
        if v is None:
            ax.text(x, top * 0.02, missing[x] if missing else "no figure", rotation=90, ha="center",
                    va="bottom", fontsize=8, color="#888")
        else:  # inside the bar, clear of the error bar
            ax.text(x, v * 0.5, f"{v:.0f}", ha="center", va="center", fontsize=8, color="white",
                    rotation=90 if len(labels) > 8 else 0)
    ax.set_xticks(list(xs), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("samples/s (95% CI)")
    ax.set_title(title)
    return _save(fig, path)


def stacked(labels: Sequence[str], parts: dict[str, Sequence[float]], path: Path, title: str,
            ylabel: str = "ms per step") -> Path | None:
    """One stacked bar per stage: each part's ms per step."""
    if not labels or not parts or not any(any(v) for v in parts.values()):
        return None
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(labels) + 3), 4))
    xs = list(range(len(labels)))
    bottom = [0.0] * len(labels)
    for name, vals in parts.items():
        if not any(vals):
            continue
        ax.bar(xs, vals, bottom=bottom, label=name, color=COLORS.get(name))
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(xs, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def curves(series: dict[str, Sequence[float]], path: Path, title: str, ylabel: str = "training loss") -> Path | None:
    """One line per stage: loss per training step."""
    series = {k: v for k, v in series.items() if len(v)}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, ys in series.items():
        ax.plot(range(len(ys)), ys, marker="." if len(ys) < 50 else None, label=name, linewidth=1.2)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def worker_sweep(workers: Sequence[int], rates: Sequence[float], path: Path, title: str) -> Path | None:
    if not workers:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    order = sorted(range(len(workers)), key=lambda i: workers[i])
    xs, ys = [workers[i] for i in order], [rates[i] for i in order]
    ax.plot(xs, ys, marker="o")
    best = max(range(len(ys)), key=lambda i: ys[i])
    ax.annotate(f"best: {xs[best]} workers", (xs[best], ys[best]), textcoords="offset points", xytext=(5, 8),
                fontsize=8)
    ax.set_xlabel("DataLoader workers")
    ax.set_ylabel("samples/s")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def grouped(labels: Sequence[str], groups: dict[str, Sequence[float | None]], path: Path, title: str,
            ylabel: str = "samples/s") -> Path | None:
    """Side-by-side bars per stage, one colour per run."""
    if not labels or not groups:
        return None
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(labels) + 2), 4))
    width = 0.8 / len(groups)
    for i, (name, vals) in enumerate(groups.items()):
        xs = [x + (i - (len(groups) - 1) / 2) * width for x in range(len(labels))]
        ax.bar(xs, [v or 0.0 for v in vals], width=width, label=name)
    ax.set_xticks(list(range(len(labels))), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)
