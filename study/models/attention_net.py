"""VGG-att3-concat-dp: the attention network of Jetley, Lord, Lee and Torr, "Learn to Pay Attention"
(ICLR 2018), written from the paper's description.

A VGG-16 body (13 conv layers with BatchNorm, in five blocks). After each of blocks 3, 4 and 5 an
attention estimator takes that block's local features l (C×H×W, before the block's pooling) and the
network's global feature g (a fully connected layer on top of block 5, pooled to one vector):

- compatibility by dot product ("dp"): c_ij = <l_ij, g>; where the block has fewer channels than g
  (block 3: 256 against 512), g is first projected to the block's channel count by a learned linear map;
- attention a = softmax(c) over the H×W positions, so each estimator's map sums to 1;
- the attended feature g_a = Σ_ij a_ij l_ij, one vector per estimator.

The three attended features are concatenated ("concat") and one linear layer classifies them; g itself
reaches the classifier only through the attention, as in the paper. The other compatibility the paper
tries, "pc" (<u, l_ij + g> with a learned u), is not built here.

Sizes: the paper removes VGG's early max-pools on CIFAR so its maps are large. Here the pools before
block 3 are chosen from the input side: as many of the two as keep block 3's map at 16 cells or more,
so at 32 px (CIFAR) the maps are 16×16, 8×8 and 4×4, and at 224 px (ImageFolder, CUB) VGG's own 56×56,
28×28 and 14×14. The global feature is pooled adaptively, so any side of 8 px or more works.

`model(x)` returns logits, like every model here; `model.attend(x)` returns (logits, maps), the maps a
list of N×H×W tensors in the order of `attention_names`. The pictures pass and `predict` read them
through `attend` (any model with such a method gets the attention pictures).
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

# VGG-16's conv layers per block: (output channels, layers); blocks 3, 4, 5 feed the estimators.
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
GLOBAL_FEATURES = 512
ATTENDED_BLOCKS = ("conv3", "conv4", "conv5")
MIN_FIRST_MAP = 16  # block 3's map side is kept at least this large when the input allows


def conv_block(in_channels: int, out_channels: int, layers: int) -> List[nn.Module]:
    mods: List[nn.Module] = []
    for i in range(layers):
        mods += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=False),
                 nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return mods


def early_pools(image_size: int) -> int:
    """How many of the two max-pools before block 3 keep its map at MIN_FIRST_MAP cells or more."""
    pools = 0
    while pools < 2 and image_size // 2 ** (pools + 1) >= MIN_FIRST_MAP:
        pools += 1
    return pools


class AttentionEstimator(nn.Module):
    """Dot-product compatibility of one block's local features with the global feature, its softmax
    over positions, and the attention-weighted sum of the local features."""

    def __init__(self, local_channels: int, global_channels: int) -> None:
        super().__init__()
        # Where the channel counts differ, g is mapped into the block's feature space (no bias: the
        # compatibility is a dot product, and a constant added to every position changes nothing).
        self.project: nn.Module = (nn.Identity() if local_channels == global_channels
                                   else nn.Linear(global_channels, local_channels, bias=False))

    def forward(self, local: torch.Tensor, g: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = local.shape
        flat = local.flatten(2)  # N×C×HW
        query = self.project(g)  # N×C
        scores = torch.bmm(query.unsqueeze(1), flat).squeeze(1)  # N×HW: <l_ij, g>
        attention = torch.softmax(scores.float(), dim=1).to(flat.dtype)  # fp32 softmax: stable under amp
        attended = torch.bmm(flat, attention.unsqueeze(2)).squeeze(2)  # N×C: Σ a_ij l_ij
        return attended, attention.view(n, h, w)


class VGGAttention(nn.Module):
    """VGG-att3-concat-dp (Jetley et al., ICLR 2018): VGG-16 with attention estimators after conv
    blocks 3, 4 and 5, dot-product compatibility, the attended features concatenated into the classifier.

    `width` scales every channel count (1.0: VGG-16's; a small fraction makes a quick test model).
    """

    attention_names = ATTENDED_BLOCKS

    def __init__(self, num_classes: int, image_size: int = 32, width: float = 1.0) -> None:
        super().__init__()
        chans = [max(4, int(round(c * width))) for c, _ in VGG16_BLOCKS]
        layers = [n for _, n in VGG16_BLOCKS]
        g_channels = max(4, int(round(GLOBAL_FEATURES * width)))
        pools = early_pools(image_size or 32)
        stem: List[nn.Module] = conv_block(3, chans[0], layers[0])
        if pools >= 1:
            stem.append(nn.MaxPool2d(2))
        stem += conv_block(chans[0], chans[1], layers[1])
        if pools >= 2:
            stem.append(nn.MaxPool2d(2))
        self.stem = nn.Sequential(*stem)
        self.block3 = nn.Sequential(*conv_block(chans[1], chans[2], layers[2]))
        # ceil_mode: an odd side (224 px → 7 → ...) or a tiny one still pools to at least one cell
        self.block4 = nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), *conv_block(chans[2], chans[3], layers[3]))
        self.block5 = nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), *conv_block(chans[3], chans[4], layers[4]))
        # g is left linear (no ReLU): the local features are non-negative after their ReLUs, so a signed g
        # can score a position down as well as up; with g >= 0 too, the planted-patch test learned less
        # often to look at the patch (conv3's peak on it in 28-80 % of pictures over 8 seeds, against 66-100 %).
        self.global_feature = nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                            nn.Linear(chans[4], g_channels))
        self.estimators = nn.ModuleList([AttentionEstimator(c, g_channels) for c in chans[2:]])
        self.classifier = nn.Linear(sum(chans[2:]), num_classes)

    def attend(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """(logits N×classes, one attention map N×H×W per estimator, each summing to 1)."""
        l3 = self.block3(self.stem(x))
        l4 = self.block4(l3)
        l5 = self.block5(l4)
        g = self.global_feature(l5)
        local = [l3, l4, l5]
        attended: List[torch.Tensor] = []
        maps: List[torch.Tensor] = []
        for i, estimator in enumerate(self.estimators):
            pooled, attention = estimator(local[i], g)
            attended.append(pooled)
            maps.append(attention)
        return self.classifier(torch.cat(attended, dim=1)), maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.attend(x)[0]


def has_attention(model: nn.Module) -> bool:
    """Whether ``model`` shows its attention: an ``attend(x) -> (logits, maps)`` method."""
    return callable(getattr(model, "attend", None))


def attention_names(model: nn.Module, count: int) -> List[str]:
    """The estimators' names (``attention_names`` of the model, else att1, att2, ...)."""
    names = list(getattr(model, "attention_names", ()) or ())
    return names[:count] if len(names) >= count else [f"att{i + 1}" for i in range(count)]


def upsampled(maps: List[torch.Tensor], size: Tuple[int, int]) -> List[torch.Tensor]:
    """Each N×h×w map brought to the picture's size (bilinear) and scaled to peak 1, for drawing."""
    out = []
    for a in maps:
        a = nn.functional.interpolate(a.detach().float().unsqueeze(1), size=size, mode="bilinear",
                                      align_corners=False)[:, 0]
        out.append((a / a.flatten(1).max(1).values.clamp(min=1e-12).view(-1, 1, 1)).cpu())
    return out
