"""Pictures of what a model predicts: heat-map and mask overlays, grids, a confusion matrix.

numpy and matplotlib only (Agg, PNG); pictures are HxWx3 float arrays in [0, 1]. Each figure
function writes one PNG and returns the figure still open, so the caller can also hand it to
TensorBoard (SummaryWriter.add_figure closes it) or close it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from study.train.tasks import IGNORE_INDEX  # noqa: E402

HEAT_ALPHA = 0.45
MASK_ALPHA = 0.5
IGNORED_COLOR = (0.6, 0.6, 0.6)  # trimap border pixels: in no class
OK_COLOR, WRONG_COLOR = "#1a7f37", "#cf222e"


def class_colors(n: int) -> np.ndarray:
    """n distinct RGB colours; class 0 (background in segmentation) dark, so the others stand out."""
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20" if n <= 20 else "hsv")
    colors = np.array([cmap(i % cmap.N if n <= 20 else i / n)[:3] for i in range(n)], dtype=np.float64)
    colors[0] = (0.12, 0.12, 0.18)
    return colors


def heat_overlay(picture: np.ndarray, heat: np.ndarray, alpha: float = HEAT_ALPHA) -> np.ndarray:
    """`heat` (HxW in [0, 1], the picture's size) in the jet colours over the picture."""
    colored = plt.get_cmap("jet")(np.clip(heat, 0, 1))[..., :3]
    return np.clip((1 - alpha) * picture + alpha * colored, 0, 1)


def mask_colors(mask: np.ndarray, n: int) -> np.ndarray:
    """Class mask (HxW ints; IGNORE_INDEX = border) as a colour picture."""
    out = np.empty(mask.shape + (3,))
    out[:] = IGNORED_COLOR
    palette = class_colors(n)
    known = mask != IGNORE_INDEX
    out[known] = palette[np.clip(mask[known], 0, n - 1)]
    return out


def mask_overlay(picture: np.ndarray, mask: np.ndarray, n: int, alpha: float = MASK_ALPHA) -> np.ndarray:
    """The picture with every non-background class painted over it (class 0 left as it is)."""
    painted = mask_colors(mask, n)
    fg = ((mask != 0) & (mask != IGNORE_INDEX))[..., None]
    return np.where(fg, (1 - alpha) * picture + alpha * painted, picture)


def save(fig, path: Path) -> Path:
    """Write the PNG atomically (temp name, then rename): a report never links half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    return path


def _cell(ax, picture: np.ndarray, title: str = "", color: str = "black") -> None:
    ax.imshow(picture, interpolation="nearest" if picture.shape[0] < 96 else "antialiased")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8, color=color)


def prediction_figure(picture: np.ndarray, overlay: np.ndarray, title: str, overlay_title: str,
                      path: Path):
    """Two panels: the picture the model saw, and the overlay (CAM or mask)."""
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.8))
    _cell(axes[0], picture, "input")
    _cell(axes[1], overlay, overlay_title)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, path)
    return fig


def cam_grid(pictures: Sequence[np.ndarray], heats: Sequence[np.ndarray], truths: Sequence[str],
             preds: Sequence[str], probs: Sequence[float], path: Path, title: str):
    """Per validation picture: the picture (true class) above its Grad-CAM overlay (predicted class)."""
    n = len(pictures)
    cols = min(n, 8)
    rows = 2 * ((n + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 2.05 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = 2 * (i // cols), i % cols
        ok = truths[i] == preds[i]
        _cell(axes[r, c], pictures[i], f"true: {truths[i]}")
        _cell(axes[r + 1, c], heat_overlay(pictures[i], heats[i]), f"pred: {preds[i]} {probs[i]:.2f}",
              OK_COLOR if ok else WRONG_COLOR)
        axes[r, c].axis("on")
        axes[r + 1, c].axis("on")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, path)
    return fig


def attention_grid(pictures: Sequence[np.ndarray], heats: Sequence[Sequence[np.ndarray]], names: Sequence[str],
                   truths: Sequence[str], preds: Sequence[str], probs: Sequence[float], path: Path, title: str):
    """One row per validation picture: the picture (true and predicted class), then each attention
    estimator's map over it (``heats[i][j]``: picture i, estimator j, HxW scaled to peak 1)."""
    n, k = len(pictures), len(names)
    fig, axes = plt.subplots(n, k + 1, figsize=(1.9 * (k + 1), 1.95 * n + 0.5), squeeze=False)
    for i in range(n):
        ok = truths[i] == preds[i]
        _cell(axes[i, 0], pictures[i], f"{truths[i]} → {preds[i]} {probs[i]:.2f}", OK_COLOR if ok else WRONG_COLOR)
        for j in range(k):
            _cell(axes[i, j + 1], heat_overlay(pictures[i], heats[i][j]), names[j] if i == 0 else "")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))  # the title above the column names
    save(fig, path)
    return fig


def segmentation_grid(pictures: Sequence[np.ndarray], truths: Sequence[np.ndarray], preds: Sequence[np.ndarray],
                      classes: Sequence[str], path: Path, title: str):
    """One row per validation picture: picture | ground-truth trimap | prediction | prediction over it."""
    n, k = len(pictures), len(classes)
    fig, axes = plt.subplots(n, 4, figsize=(8, 2.1 * n + 0.6), squeeze=False)
    for i in range(n):
        head = i == 0
        _cell(axes[i, 0], pictures[i], "image" if head else "")
        _cell(axes[i, 1], mask_colors(truths[i], k), "ground truth (trimap)" if head else "")
        _cell(axes[i, 2], mask_colors(preds[i], k), "prediction" if head else "")
        _cell(axes[i, 3], mask_overlay(pictures[i], preds[i], k), "prediction over image" if head else "")
    palette = class_colors(k)
    handles = [matplotlib.patches.Patch(color=palette[j], label=name) for j, name in enumerate(classes)]
    handles.append(matplotlib.patches.Patch(color=IGNORED_COLOR, label="border (ignored)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    save(fig, path)
    return fig


def confusion_figure(matrix: np.ndarray, classes: Sequence[str], path: Path, title: str, unit: str = "images"):
    """Rows: true class, columns: predicted; colour = share of the row, text = count (small matrices)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    k = len(classes)
    share = matrix / np.clip(matrix.sum(1, keepdims=True), 1, None)
    side = min(max(4.0, 0.5 * k + 2), 14.0)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if k <= 40:
        ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(k), classes, fontsize=8)
    if k <= 20:
        for r in range(k):
            for c in range(k):
                ax.text(c, r, f"{matrix[r, c]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if share[r, c] > 0.5 else "black")
    ax.set_xlabel(f"predicted class ({unit})")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save(fig, path)
    return fig


def close(fig) -> None:
    plt.close(fig)
