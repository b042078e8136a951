"""Grad-CAM (Selvaraju et al., 2017) on a model's last convolutional block, with hooks.

The class score's gradient with respect to the block's output, averaged over each channel's map,
weighs the channels; their weighted sum, through a ReLU, is where the evidence for that class lies.
The block's maps are coarse (stride 32 for ResNet), so the map is upsampled to the input.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from study.tasks import logits_of


def target_layer(model: nn.Module) -> nn.Module:
    """The last conv block: ResNet's layer4, DeepLabV3's backbone layer4, the tiny model's backbone;
    for anything else the last Conv2d."""
    for owner in (model, getattr(model, "backbone", None)):
        if owner is not None and isinstance(getattr(owner, "layer4", None), nn.Module):
            return owner.layer4
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Sequential) and any(isinstance(m, nn.Conv2d) for m in backbone):
        return backbone
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no convolution to take a class activation map from")
    return convs[-1]


class GradCAM:
    """`cam(x, classes)` → (maps N×H×W in [0, 1], logits). `classes` None: each input's top class.

    The forward hook keeps the block's output of this call only; the gradient is taken with
    torch.autograd.grad, so the model's own .grad buffers are never touched.
    """

    def __init__(self, model: nn.Module, layer: nn.Module | None = None) -> None:
        self.model = model
        self.layer = layer if layer is not None else target_layer(model)
        self.activation: torch.Tensor | None = None

    def _keep(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.activation = output["out"] if isinstance(output, dict) else output

    def __call__(self, x: torch.Tensor, classes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        handle = self.layer.register_forward_hook(self._keep)
        try:
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)  # a graph even when every weight is frozen
                logits = logits_of(self.model(x))
                if logits.dim() == 4:  # a segmentation model: the class's score summed over the picture
                    logits = logits.flatten(2).mean(2)
                if classes is None:
                    classes = logits.argmax(1)
                score = logits.gather(1, classes.view(-1, 1).to(logits.device)).sum()
                act = self.activation
                assert act is not None, "the target layer did not run"
                (grad,) = torch.autograd.grad(score, act)
        finally:
            handle.remove()
            self.activation = None
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * act).sum(1, keepdim=True)).detach()
        cam = nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        peak = cam.flatten(1).max(1).values.clamp(min=1e-12).view(-1, 1, 1)
        return (cam / peak).float().cpu(), logits.detach().float().cpu()
