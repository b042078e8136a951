"""Model builders: torchvision architectures with the head replaced for the dataset's classes.

Weights never come from a hub at run time: `--weights PATH` loads a local state dict (for example the
torchvision ImageNet/COCO checkpoint a user downloaded once) before the head is replaced, so
transfer learning keeps the backbone and trains a fresh head.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from study.config import ConfigError, RunConfig


class TinyNet(nn.Module):
    """A few conv layers: fast enough for the test suite, same interfaces as the real models.

    classify → logits (N, C); segment → {"out": (N, C, H, W)} like torchvision's DeepLabV3.
    """

    def __init__(self, num_classes: int, segment: bool = False) -> None:
        super().__init__()
        self.segment = segment
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
        )
        if segment:
            self.classifier = nn.Conv2d(64, num_classes, 1)
        else:
            self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor):  # type: ignore[override]
        feats = self.backbone(x)
        if self.segment:
            logits = self.classifier(feats)
            return {"out": nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear",
                                                     align_corners=False)}
        return self.classifier(feats)


def _load_weights(model: nn.Module, path: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"weights file not found: {path}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"cannot load weights {path}: {str(e).splitlines()[0]}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a study checkpoint
    if not isinstance(state, dict):
        raise ConfigError(f"weights file {path} holds no state dict")
    own = model.state_dict()
    # The dataset's head differs from the checkpoint's (1000 ImageNet / 21 VOC classes): keep only
    # tensors whose name and shape match, and say how many were loaded.
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ConfigError(f"weights file {path} matches no parameter of this model")
    model.load_state_dict(usable, strict=False)
    model.loaded_weights = (len(usable), len(own))  # type: ignore[attr-defined]


def build_model(cfg: RunConfig, num_classes: int) -> nn.Module:
    import torchvision

    segment = cfg.task == "segment"
    if cfg.model == "tiny":
        model: nn.Module = TinyNet(num_classes, segment=segment)
        if cfg.weights:
            _load_weights(model, cfg.weights)
        head_names = ("classifier",)
    elif cfg.model in ("resnet50", "resnet18"):
        model = getattr(torchvision.models, cfg.model)(weights=None)
        if cfg.weights:
            _load_weights(model, cfg.weights)
        model.fc = nn.Linear(model.fc.in_features, num_classes)
        head_names = ("fc",)
    elif cfg.model == "deeplabv3_resnet101":
        from torchvision.models.segmentation.deeplabv3 import DeepLabHead

        model = torchvision.models.segmentation.deeplabv3_resnet101(
            weights=None, weights_backbone=None, aux_loss=False)
        if cfg.weights:
            _load_weights(model, cfg.weights)
        model.classifier = DeepLabHead(2048, num_classes)
        head_names = ("classifier",)
    else:  # config validation keeps us from here
        raise ConfigError(f"unknown model {cfg.model!r}")

    if cfg.freeze_backbone:
        for name, p in model.named_parameters():
            p.requires_grad = name.split(".")[0] in head_names
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
