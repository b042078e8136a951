"""Grad-CAM (Selvaraju et al., 2017) on a model's last convolutional block, with hooks.

The class score's gradient with respect to the block's output, averaged over each channel's map,
weighs the channels; their weighted sum, through a ReLU, is where the evidence for that class lies.
The block's maps are coarse (stride 32 for ResNet), so the map is upsampled to the input.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from study.train.tasks import logits_of


# A map coarser than this says nothing about where: ResNet's layer4 is 1x1 at 32 px (CIFAR) and 7x7
# at 224 px, so small inputs take the last block that still has this many cells per side.
MIN_CAM_SIDE = 4


def candidate_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv blocks to take the map from, the last first: ResNet's layer4..layer1 (DeepLabV3's in its
    backbone), the tiny model's backbone; for anything else its last Conv2d."""
    for prefix, owner in (("", model), ("backbone.", getattr(model, "backbone", None))):
        if owner is not None and isinstance(getattr(owner, "layer4", None), nn.Module):
            return [(f"{prefix}layer{i}", getattr(owner, f"layer{i}")) for i in (4, 3, 2, 1)]
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Sequential) and any(isinstance(m, nn.Conv2d) for m in backbone):
        return [("backbone", backbone)]
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no convolution to take a class activation map from")
    return [convs[-1]]


def why_no_cam(model: nn.Module) -> str:
    """Why Grad-CAM cannot look at ``model`` (it has no convolution), or "" when it can."""
    try:
        candidate_layers(model)
    except ValueError as e:
        return str(e)
    return ""


class GradCAM:
    """`cam(x, classes)` → (maps N×H×W in [0, 1], logits). `classes` None: each input's top class.

    The map comes from the last candidate block whose output has at least MIN_CAM_SIDE cells per side
    (the coarsest otherwise); `layer_name` says which one the last call used. Forward hooks keep
    the blocks' outputs of this call only; the gradient is taken with torch.autograd.grad, so the
    model's own .grad buffers are never touched.
    """

    def __init__(self, model: nn.Module, layer: nn.Module | None = None) -> None:
        self.model = model
        self.layers = [("layer", layer)] if layer is not None else candidate_layers(model)
        self.layer_name = ""

    def __call__(self, x: torch.Tensor, classes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        kept: dict[str, torch.Tensor] = {}

        def keeper(name: str):
            def keep(module: nn.Module, inputs: Any, output: Any) -> None:
                kept[name] = output["out"] if isinstance(output, dict) else output
            return keep

        handles = [layer.register_forward_hook(keeper(name)) for name, layer in self.layers]
        try:
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)  # a graph even when every weight is frozen
                logits = logits_of(self.model(x))
                if logits.dim() == 4:  # a segmentation model: the class's score summed over the picture
                    logits = logits.flatten(2).mean(2)
                if classes is None:
                    classes = logits.argmax(1)
                score = logits.gather(1, classes.view(-1, 1).to(logits.device)).sum()
                ran = [name for name, _ in self.layers if name in kept]
                assert ran, "no candidate layer ran"
                sides = {name: min(kept[name].shape[-2:]) for name in ran}
                self.layer_name = next((n for n in ran if sides[n] >= MIN_CAM_SIDE), max(ran, key=sides.get))
                act = kept[self.layer_name]
                (grad,) = torch.autograd.grad(score, act)
        finally:
            for h in handles:
                h.remove()
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * act).sum(1, keepdim=True)).detach()
        cam = nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        peak = cam.flatten(1).max(1).values.clamp(min=1e-12).view(-1, 1, 1)
        return (cam / peak).float().cpu(), logits.detach().float().cpu()
