"""A model with data-dependent control flow that eager PyTorch trains but TorchScript cannot take:
the forward picks a head by a Python-side look at the batch (script cannot index a ModuleDict by a
computed key) and returns the route it took beside the logits (trace takes tensors only)."""
import torch
from torch import nn


class Routed(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.heads = nn.ModuleDict({"bright": nn.Linear(8, num_classes), "dark": nn.Linear(8, num_classes)})

    def forward(self, x: torch.Tensor):
        route = "bright" if float(x.mean()) > 0 else "dark"
        return {"out": self.heads[route](self.features(x)), "route": route}


def build(num_classes: int) -> nn.Module:
    return Routed(num_classes)
