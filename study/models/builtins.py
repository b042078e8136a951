"""Model builders: the built-ins register in study.models.registry as plug-ins do (torchvision:NAME,
timm:NAME and the user's FILE.py:FUNC resolve there too); `build_model` builds any of them, the head
sized for the dataset's classes.

Weights never come from a hub at run time: `--weights PATH` loads a local state dict (for example the
torchvision ImageNet/COCO checkpoint a user downloaded once) before the head is replaced, so
transfer learning keeps the backbone and trains a fresh head.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from study.core.config import MODEL_TASKS, ConfigError, RunConfig, is_reference
from study.models.registry import Builder, entry, head_keys, make, register


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


# Transfer learning keeps the backbone: a weights file must cover at least this share of the
# backbone's tensors (parameters and BatchNorm statistics, matched by name and shape; the head is
# replaced anyway). Checkpoints of the same architecture match all of them (old torchvision files lack
# only num_batches_tracked, which is not counted); a checkpoint of a sibling architecture matches a
# fraction by accident (ResNet-18 into ResNet-50: 30%) and must be refused, not half-loaded.
MIN_BACKBONE_MATCH = 0.9

# The modules each builder replaces or creates for the dataset's classes.
HEADS = {"tiny": ("classifier",), "resnet50": ("fc",), "resnet18": ("fc",), "deeplabv3_resnet101": ("classifier",),
         "vgg_attention": ("classifier",)}


def read_weights(path: str) -> dict:
    """The state dict in a weights file (a bare state dict, or a checkpoint holding one under "model"
    or "state_dict"), loaded with weights_only=True. ConfigError (one line, with a reason) otherwise."""
    import zipfile

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"weights file not found: {path}")
    try:
        # mmap: the parent checks a file of hundreds of MB without reading it all; needs the zip format
        state = torch.load(p, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(p))
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():
            raise ConfigError(f"weights file {path} holds Python objects besides tensors, and loading them could run "
                              f"code (weights_only=True refuses); save a plain state dict: "
                              f"torch.save(model.state_dict(), PATH)") from None
        raise ConfigError(f"cannot load weights {path}: not a file torch.save wrote, or damaged "
                          f"({load_failure(p, e)}); download or save it again") from None
    except Exception as e:  # noqa: BLE001 — truncated zip, garbled pickle, ...: the same to the user
        raise ConfigError(f"cannot load weights {path}: not a file torch.save wrote, or damaged "
                          f"({load_failure(p, e)}); download or save it again") from None
    for key in ("model", "state_dict"):  # a study checkpoint, or a training framework's
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"weights file {path} holds no state dict (name → tensor); save one with "
                          f"torch.save(model.state_dict(), PATH)")
    return state


def load_failure(path: Path, e: BaseException) -> str:
    """Why torch.load could not read ``path``, in words (torch's own message can be a bare number)."""
    import zipfile

    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        head = b""
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        return "truncated: a zip archive, as torch.save writes, without its end"
    if not head:
        return "empty"
    return _reason(e)


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split()).split(". ")[0]  # torch appends advice meant for its own developers
    if "weights only load failed" in text.lower():
        text = " ".join(str(e).split()).rsplit("error: ", 1)[-1]  # the unpickler's own complaint, at the end
        text = text.split(" Check the documentation")[0]
    return f"{type(e).__name__}: {text[:160]}" if text else type(e).__name__


def usable_weights(own: dict, state: dict, path: str, model_name: str, head: set[str] | None = None) -> dict:
    """The tensors of ``state`` that fit ``own`` (the model's state dict) by name and shape. ConfigError
    when they cover less than MIN_BACKBONE_MATCH of the backbone (``head``: the head's keys, not counted;
    by default the built-in's HEADS): a file of another architecture."""
    if head is None:
        head = {k for k in own if k.split(".")[0] in HEADS.get(model_name, ())}
    usable = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    backbone = [k for k in own if k not in head and not k.endswith("num_batches_tracked")]
    matched = sum(k in usable for k in backbone)
    if backbone and matched < MIN_BACKBONE_MATCH * len(backbone):
        raise ConfigError(f"weights file {path} fits {matched} of the {len(backbone)} backbone tensors of "
                          f"{model_name} ({matched / len(backbone):.0%}; at least {MIN_BACKBONE_MATCH:.0%} must match "
                          f"by name and shape): it was saved from another architecture; use weights of "
                          f"{model_name}, or pick the --model they belong to")
    return usable


def _load_weights(model: nn.Module, path: str, model_name: str) -> None:
    own = model.state_dict()
    # The dataset's head differs from the checkpoint's (1000 ImageNet / 21 VOC classes): keep only
    # tensors whose name and shape match, and say how many were loaded.
    usable = usable_weights(own, read_weights(path), path, model_name)
    model.load_state_dict(usable, strict=False)
    model.loaded_weights = (len(usable), len(own))  # type: ignore[attr-defined]


@register("tiny", MODEL_TASKS["tiny"], HEADS["tiny"], loads_weights=True)
def _tiny(num_classes: int, task: str, image_size: int, weights: str) -> nn.Module:
    model = TinyNet(num_classes, segment=task == "segment")
    if weights:
        _load_weights(model, weights, "tiny")
    return model


def _resnet(name: str) -> Builder:
    def build(num_classes: int, task: str, image_size: int, weights: str) -> nn.Module:
        import torchvision

        model = getattr(torchvision.models, name)(weights=None)
        if weights:  # into the 1000-class model as saved, then a fresh head
            _load_weights(model, weights, name)
        model.fc = nn.Linear(model.fc.in_features, num_classes)
        return model
    return build


for _name in ("resnet50", "resnet18"):
    register(_name, MODEL_TASKS[_name], HEADS[_name], loads_weights=True)(_resnet(_name))


@register("deeplabv3_resnet101", MODEL_TASKS["deeplabv3_resnet101"], HEADS["deeplabv3_resnet101"], loads_weights=True)
def _deeplabv3(num_classes: int, task: str, image_size: int, weights: str) -> nn.Module:
    import torchvision
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead

    model = torchvision.models.segmentation.deeplabv3_resnet101(weights=None, weights_backbone=None, aux_loss=False)
    if weights:
        _load_weights(model, weights, "deeplabv3_resnet101")
    model.classifier = DeepLabHead(2048, num_classes)
    return model


@register("vgg_attention", MODEL_TASKS["vgg_attention"], HEADS["vgg_attention"], loads_weights=True)
def _vgg_attention(num_classes: int, task: str, image_size: int, weights: str) -> nn.Module:
    from study.models.attention_net import VGGAttention

    # The input side decides the early pooling (16×16 first attention map at 32 px, 56×56 at 224 px).
    model = VGGAttention(num_classes, image_size or 32)
    if weights:
        _load_weights(model, weights, "vgg_attention")
    return model


def input_size(cfg: RunConfig) -> int:
    """The side of the pictures the model sees: --image-size, else the dataset's own (0: unknown)."""
    from study.core import catalog

    if cfg.image_size or is_reference(cfg.dataset):
        return int(cfg.image_size)
    return int(catalog.get(cfg.dataset).default_size)


def model_heads(cfg: RunConfig, own: dict, num_classes: int) -> set[str]:
    """The state-dict keys of the head of ``cfg``'s model (what --weights never fills)."""
    return head_keys(entry(cfg.model), own, num_classes, cfg.task, input_size(cfg))


def check_weights(cfg: RunConfig, own: dict, num_classes: int) -> dict:
    """The tensors of --weights that fit the model whose state dict is ``own`` (ConfigError otherwise)."""
    return usable_weights(own, read_weights(cfg.weights), cfg.weights, cfg.model,
                          model_heads(cfg, own, num_classes))


def output_problem(task: str, out: object, shape: tuple[int, ...], num_classes: int) -> str:
    """Why a model's output ``out`` for an input batch of ``shape`` does not fit a built-in task ("" when it
    does, or for a plug-in task, which judges its own outputs)."""
    if task not in ("classify", "segment"):
        return ""
    logits = out.get("out") if isinstance(out, dict) else out
    if not isinstance(logits, torch.Tensor):
        return f"its output is a {type(out).__name__}, not a tensor of logits (nor a dict with them under 'out')"
    want = (shape[0], num_classes) if task == "classify" else (shape[0], num_classes, *shape[2:])
    if tuple(logits.shape) != want:
        need = "(batch, classes)" if task == "classify" else "(batch, classes, height, width) at the input's size"
        return (f"its output has shape {tuple(logits.shape)}; --task {task} needs logits {need}, here {want} "
                f"({num_classes} classes): size the last layer by the builder's num_classes")
    return ""


def build_model(cfg: RunConfig, num_classes: int) -> nn.Module:
    """The model ``cfg.model`` names, through the registry, its head sized for ``num_classes``; --weights
    loaded by name and shape (never the head), the backbone frozen with --freeze-backbone."""
    model, e = make(cfg.model, num_classes, cfg.task, input_size(cfg), cfg.weights)
    heads: set[str] | None = None
    if cfg.weights and not e.loads_weights:
        own = model.state_dict()
        heads = model_heads(cfg, own, num_classes)
        usable = usable_weights(own, read_weights(cfg.weights), cfg.weights, cfg.model, heads)
        model.load_state_dict(usable, strict=False)
        model.loaded_weights = (len(usable), len(own))  # type: ignore[attr-defined]
    if cfg.freeze_backbone:
        heads = heads if heads is not None else model_heads(cfg, model.state_dict(), num_classes)
        for name, p in model.named_parameters():
            p.requires_grad = name in heads
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
