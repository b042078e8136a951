"""The pictures pass: the last ok stage's checkpoint on the validation set → PNGs, TensorBoard images
and the payload the parent writes to reports/<run>/pictures.json."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from study.models.attention_net import attention_names, has_attention, upsampled
from study.core.config import ConfigError
from study.pictures.gradcam import GradCAM, why_no_cam
from study.train.checkpoint_meta import denormalize, device_for, load_model
from study.pictures import CAM_PICTURES, SEGMENT_PICTURES, draw
from study.core.stage_spec import StageSpec
from study.train.tasks import IoU, logits_of


def as_pictures(x: torch.Tensor, meta: dict[str, Any]) -> list[np.ndarray]:
    """Normalised N×3×H×W inputs → HxWx3 pictures in [0, 1]."""
    return list(denormalize(x.float().cpu(), meta["mean"], meta["std"]).permute(0, 2, 3, 1).numpy())


def val_batches(loader: Any, val_steps: int):
    """The validation batches the stage's metric used (all, or the first --val-steps)."""
    for i, batch in enumerate(loader):
        if val_steps and i >= val_steps:
            break
        yield batch


def classify(model: torch.nn.Module, meta: dict[str, Any], loader: Any, val_steps: int, device: torch.device,
             out: Path, title: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Confusion matrix over the validation batches; Grad-CAM on the first CAM_PICTURES of them."""
    classes = meta["classes"]
    k = len(classes)
    confusion = torch.zeros(k * k, dtype=torch.long)
    first_x: list[torch.Tensor] = []
    first_y: list[torch.Tensor] = []
    with torch.no_grad():
        for x, y in val_batches(loader, val_steps):
            pred = logits_of(model(x.to(device))).argmax(1).cpu()
            confusion += torch.bincount(y.view(-1) * k + pred.view(-1), minlength=k * k)
            if sum(len(t) for t in first_x) < CAM_PICTURES:
                first_x.append(x)
                first_y.append(y)
    matrix = confusion.view(k, k).numpy()
    if matrix.sum() == 0:
        raise ConfigError("the validation set gave no batch to draw")
    x = torch.cat(first_x)[:CAM_PICTURES]
    y = torch.cat(first_y)[:CAM_PICTURES]
    figs = {"confusion_matrix": draw.confusion_figure(matrix, classes, out / "confusion_matrix.png",
                                                      f"{title}: confusion matrix ({int(matrix.sum())} validation images)")}
    no_cam = why_no_cam(model)  # a plug-in model without convolutions: its CAM pictures are skipped, said why
    if not no_cam:
        cam = GradCAM(model)
        heats, logits = cam(x.to(device))
        top_p, top = logits.softmax(1).max(1)
        figs["cam_grid"] = draw.cam_grid(as_pictures(x, meta), list(heats.numpy()), [classes[i] for i in y.tolist()],
                                         [classes[i] for i in top.tolist()], top_p.tolist(), out / "cam_grid.png",
                                         f"{title}: Grad-CAM of the predicted class ({cam.layer_name})")
    attention: list[dict[str, Any]] = []
    if has_attention(model):
        attention = attention_figure(model, x, y, meta, device, out, title, figs)
    rows, cols = matrix.sum(1), matrix.sum(0)
    per_class = [{"class": name, "images": int(rows[i]), "predicted": int(cols[i]),
                  "recall": float(matrix[i, i] / rows[i]) if rows[i] else None,
                  "precision": float(matrix[i, i] / cols[i]) if cols[i] else None} for i, name in enumerate(classes)]
    info = {"images": int(matrix.sum()), "top1": float(np.trace(matrix) / matrix.sum()),
            "cam_layer": "" if no_cam else cam.layer_name, "confusion": matrix.tolist(), "per_class": per_class,
            "cam_skipped": no_cam}
    if attention:
        info["attention"] = attention
    return info, figs


def attention_figure(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, meta: dict[str, Any],
                     device: torch.device, out: Path, title: str, figs: dict[str, Any]) -> list[dict[str, Any]]:
    """attention.png: each picture beside every attention estimator's map over it (the model's own
    `attend`, no gradient); adds the figure to ``figs`` and returns the estimators (name, map side)."""
    classes = meta["classes"]
    with torch.no_grad():
        logits, maps = model.attend(x.to(device))
    names = attention_names(model, len(maps))
    heats = upsampled(maps, tuple(x.shape[-2:]))
    top_p, top = logits.float().softmax(1).max(1)
    labels = [f"{name} ({a.shape[-2]}×{a.shape[-1]})" for name, a in zip(names, maps)]
    figs["attention"] = draw.attention_grid(
        as_pictures(x, meta), [[h[i].numpy() for h in heats] for i in range(len(x))], labels,
        [classes[i] for i in y.tolist()], [classes[i] for i in top.cpu().tolist()], top_p.cpu().tolist(),
        out / "attention.png", f"{title}: attention of each estimator (true → predicted class)")
    return [{"estimator": name, "side": [int(a.shape[-2]), int(a.shape[-1])]} for name, a in zip(names, maps)]


def segment(model: torch.nn.Module, meta: dict[str, Any], loader: Any, val_steps: int, device: torch.device,
            out: Path, title: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-class IoU over the validation batches (the stage's metric); a grid of the first pictures."""
    classes = meta["classes"]
    k = len(classes)
    metric = IoU(k)
    pics: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    preds: list[np.ndarray] = []
    images = 0
    with torch.no_grad():
        for x, y in val_batches(loader, val_steps):
            logits = logits_of(model(x.to(device))).float().cpu()
            metric.update(logits, y)
            images += len(x)
            if len(pics) < SEGMENT_PICTURES:
                n = SEGMENT_PICTURES - len(pics)
                pics += as_pictures(x[:n], meta)
                truths += list(y[:n].numpy())
                preds += list(logits[:n].argmax(1).numpy())
    if not images:
        raise ConfigError("the validation set gave no batch to draw")
    scores = metric.compute()
    confusion = metric.confusion.numpy()
    figs = {
        "segmentation_grid": draw.segmentation_grid(pics, truths, preds, classes, out / "segmentation_grid.png",
                                                    f"{title}: validation pictures"),
        "confusion_matrix": draw.confusion_figure(confusion, classes, out / "confusion_matrix.png",
                                                  f"{title}: pixel confusion ({images} validation images)",
                                                  unit="pixels"),
    }
    per_class = [{"class": name, "iou": scores[f"iou_{i}"] if np.isfinite(scores[f"iou_{i}"]) else None,
                  "true_pixels": int(confusion[i].sum()), "predicted_pixels": int(confusion[:, i].sum())}
                 for i, name in enumerate(classes)]
    info = {"images": images, "miou": scores["miou"], "pixel_acc": scores["pixel_acc"],
            "confusion": confusion.astype(np.int64).tolist(), "per_class": per_class}
    return info, figs


def run(spec: StageSpec) -> dict[str, Any]:
    """Draw the pictures of `spec`'s checkpoint; returns the payload of pictures.json."""
    from torch.utils.data import DataLoader
    from torch.utils.tensorboard import SummaryWriter

    from study.data import open_datasets

    cfg = spec.config
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not spec.checkpoint_path.is_file():
        raise ConfigError(f"stage {spec.name} left no checkpoint at {spec.checkpoint_path}")
    device = device_for(cfg.device)
    model, meta = load_model(spec.checkpoint_path, device)
    bundle = open_datasets(cfg)
    loader = DataLoader(bundle.val, batch_size=cfg.batch_size, shuffle=False)  # the metric's order
    out = cfg.report_dir
    title = f"{cfg.run_name} / {spec.name}"
    make = classify if meta["task"] == "classify" else segment
    info, figs = make(model, meta, loader, cfg.val_steps, device, out, title)
    spec.profile_dir.mkdir(parents=True, exist_ok=True)
    with SummaryWriter(log_dir=str(spec.profile_dir)) as writer:
        for name, fig in figs.items():
            writer.add_figure(f"pictures/{name}", fig, global_step=meta["trained_steps"])  # closes the figure
    return {"stage": spec.name, "task": meta["task"], "model": meta["model"], "classes": meta["classes"],
            "checkpoint": str(spec.checkpoint_path), "trained_steps": meta["trained_steps"],
            "tensorboard": str(spec.profile_dir), "files": {name: f"{name}.png" for name in figs}, **info}
