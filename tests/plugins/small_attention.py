"""A small VGG-att (an eighth of VGG-16's channels) for quick tests of the attention pictures."""
from study.models.attention_net import VGGAttention


def build(num_classes: int, image_size: int = 32) -> VGGAttention:
    return VGGAttention(num_classes, image_size or 32, width=0.125)
