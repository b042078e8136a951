"""Grad-CAM must point at the evidence: on a model that learned a planted patch, the map peaks there."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from study.pictures.gradcam import GradCAM
from study.models.builtins import TinyNet

SIZE, PATCH = 32, 8


def with_patch(n: int, gen: torch.Generator, corners: list[tuple[int, int]] | None = None) -> torch.Tensor:
    """Noise pictures with a bright square (the planted feature) at a random or given place."""
    x = torch.rand(n, 3, SIZE, SIZE, generator=gen) * 0.6 - 0.3
    for i in range(n):
        if corners is None:
            r, c = torch.randint(0, SIZE - PATCH + 1, (2,), generator=gen).tolist()
        else:
            r, c = corners[i]
        x[i, :, r:r + PATCH, c:c + PATCH] = 1.5
    return x


@pytest.fixture(scope="module")
def patch_model() -> TinyNet:
    """TinyNet trained to tell pictures with the square (class 1) from noise alone (class 0)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = TinyNet(2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        pos = with_patch(16, gen)
        neg = torch.rand(16, 3, SIZE, SIZE, generator=gen) * 0.6 - 0.3
        x, y = torch.cat([pos, neg]), torch.cat([torch.ones(16), torch.zeros(16)]).long()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    acc = (model(with_patch(32, gen)).argmax(1) == 1).float().mean()
    assert acc > 0.9, f"the tiny model did not learn the patch (accuracy {acc:.2f})"
    return model


def test_heat_map_peaks_on_the_planted_patch(patch_model):
    corners = [(0, 0), (0, SIZE - PATCH), (SIZE - PATCH, 0), (SIZE - PATCH, SIZE - PATCH), (12, 12)]
    x = with_patch(len(corners), torch.Generator().manual_seed(1), corners)
    cam, logits = GradCAM(patch_model)(x, torch.ones(len(corners), dtype=torch.long))
    assert cam.shape == (len(corners), SIZE, SIZE) and logits.shape == (len(corners), 2)
    assert float(cam.min()) >= 0.0 and torch.allclose(cam.flatten(1).max(1).values, torch.ones(len(corners)))
    for i, (r, c) in enumerate(corners):
        peak_r, peak_c = divmod(int(cam[i].argmax()), SIZE)
        # the map is upsampled from the 8x8 feature grid (stride 4): allow one feature cell around the patch
        assert r - 4 <= peak_r < r + PATCH + 4 and c - 4 <= peak_c < c + PATCH + 4, (i, (r, c), (peak_r, peak_c))
        inside = cam[i, r:r + PATCH, c:c + PATCH].mean()
        assert inside > 2 * cam[i].mean(), "the patch must hold the heat, not just the peak"


def test_default_class_is_the_top_class_and_the_model_is_left_as_it_was(patch_model):
    x = with_patch(2, torch.Generator().manual_seed(2))
    weights = [p.detach().clone() for p in patch_model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in patch_model.parameters()]
    cam, logits = GradCAM(patch_model)(x)
    top = GradCAM(patch_model)(x, logits.argmax(1))[0]
    assert torch.allclose(cam, top)
    assert all(torch.equal(a, b) for a, b in zip(weights, patch_model.parameters()))
    after = [p.grad for p in patch_model.parameters()]
    assert all((g is None and a is None) or torch.equal(g, a) for g, a in zip(grads, after))
    assert not patch_model.backbone._forward_hooks  # the hook is gone after the call


def hand_cam(head: nn.Module, tail: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Grad-CAM written out for a model that is head then tail, on the output of head."""
    act = head(x).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(tail(act).gather(1, classes.view(-1, 1)).sum(), act)
    cam = torch.relu((grad.mean((2, 3), keepdim=True) * act).sum(1, keepdim=True))
    cam = nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return cam / cam.flatten(1).max(1).values.clamp(min=1e-12).view(-1, 1, 1)


def test_the_pictures_pass_takes_the_map_of_the_block_it_names():
    """What the pictures pass calls, GradCAM(model) with no layer given, and the layer_name its title
    shows: the tiny model's backbone, DeepLabV3's backbone.layer4, else the last convolution; the
    map is the one a hand computation on that very block gives."""
    from torchvision.models.segmentation import deeplabv3_resnet50

    torch.manual_seed(0)
    tiny = TinyNet(3).eval()
    x, classes = torch.randn(2, 3, SIZE, SIZE), torch.tensor([2, 0])
    cam = GradCAM(tiny)
    heat, _ = cam(x, classes)
    assert cam.layer_name == "backbone"
    assert torch.allclose(heat, hand_cam(tiny.backbone, tiny.classifier, x, classes), atol=1e-5)

    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten())
    cam = GradCAM(plain)
    heat, _ = cam(x, torch.tensor([1, 3]))
    assert cam.layer_name == "2"
    assert torch.allclose(heat, hand_cam(plain[:3], plain[3:], x, torch.tensor([1, 3])), atol=1e-5)

    deeplab = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=2, aux_loss=False).eval()
    cam = GradCAM(deeplab)
    heat, logits = cam(torch.randn(1, 3, 64, 64))
    assert cam.layer_name == "backbone.layer4" and heat.shape == (1, 64, 64) and logits.shape == (1, 2)

    with pytest.raises(ValueError, match="no convolution"):
        GradCAM(nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 2)))


@pytest.mark.parametrize("side, layer", [(224, "layer4"), (64, "layer3"), (32, "layer2")])
def test_small_inputs_take_the_last_block_that_still_has_a_map(side, layer):
    """ResNet's layer4 is 7x7 at 224 px but 1x1 at 32 px, where a 'map' would be one flat colour."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    cam = GradCAM(model)
    heat, _ = cam(torch.randn(1, 3, side, side))
    assert cam.layer_name == layer and heat.shape == (1, side, side)
    assert float(heat.std()) > 0  # not one flat value
    assert not any(m._forward_hooks for m in model.modules())
