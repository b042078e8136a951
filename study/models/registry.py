"""The model registry: every `--model` resolves here to one ModelEntry, built-ins and plug-ins alike.

- built-ins (resnet50, resnet18, deeplabv3_resnet101, vgg_attention, tiny) register themselves in study.models.builtins;
- `torchvision:NAME`: a classification or segmentation builder of torchvision.models, built with
  weights=None (and weights_backbone=None): nothing is ever downloaded, weights come from --weights;
- `timm:NAME`: timm.create_model(NAME, pretrained=False, num_classes=...), a classifier;
- `FILE.py:FUNC` / `package.module:FUNC`: the user's builder, called with the number of classes and,
  as keyword arguments when it accepts them, `task` and `image_size`; it returns an nn.Module.

A reference is a string: it travels to every stage process and to a checkpoint's metadata, and each of
them resolves it here again. Every failure is one ConfigError line naming the reference.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from study.core.config import ConfigError, is_reference

# (num_classes, task, image_size, weights path or "") -> nn.Module
Builder = Callable[[int, str, int, str], Any]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    tasks: tuple[str, ...]  # the built-in tasks it does; () = any (a plug-in: the preflight's forward decides)
    build: Builder
    # Top-level modules replaced or created for the dataset's classes; None: the tensors whose shape
    # depends on the class count (found by building it on meta twice).
    heads: tuple[str, ...] | None = None
    loads_weights: bool = False  # the builder loads --weights itself (the built-ins, before their head is replaced)


REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, tasks: tuple[str, ...], heads: tuple[str, ...] | None = None,
             loads_weights: bool = False) -> Callable[[Builder], Builder]:
    """Decorator: `build` becomes the model `name` (a built-in name, or a plug-in's own)."""
    def add(build: Builder) -> Builder:
        REGISTRY[name] = ModelEntry(name, tuple(tasks), build, heads, loads_weights)
        return build
    return add


def _last_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[-1][:200] if lines else ''}".rstrip(": ")


def _checked(ref: str, model: Any) -> Any:
    from torch import nn

    if not isinstance(model, nn.Module):
        raise ConfigError(f"--model {ref}: the builder returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _torchvision_entry(ref: str, name: str) -> ModelEntry:
    import torchvision.models as tvm

    classifiers, segmenters = tvm.list_models(module=tvm), tvm.list_models(module=tvm.segmentation)
    if name not in classifiers and name not in segmenters:
        raise ConfigError(f"--model {ref}: {name!r} is no classification or segmentation builder of "
                          f"torchvision.models (e.g. mobilenet_v3_small, resnet18, deeplabv3_mobilenet_v3_large)")
    segment = name in segmenters
    extra: dict[str, Any] = {}
    if segment:
        extra["weights_backbone"] = None  # the default would download ImageNet weights
        if "aux_loss" in inspect.signature(tvm.get_model_builder(name)).parameters:
            extra["aux_loss"] = False

    def build(num_classes: int, task: str, image_size: int, weights: str) -> Any:
        return tvm.get_model(name, weights=None, num_classes=num_classes, **extra)

    return ModelEntry(ref, ("segment",) if segment else ("classify",), build)


def _timm_entry(ref: str, name: str) -> ModelEntry:
    try:
        import timm
    except ImportError:
        raise ConfigError(f"--model {ref}: timm is not installed; pip install timm") from None
    if not timm.is_model(name):
        near = timm.list_models(f"*{name[:4]}*")[:5]
        raise ConfigError(f"--model {ref}: timm has no model {name!r}" + (f" (near: {', '.join(near)})" if near else ""))

    def build(num_classes: int, task: str, image_size: int, weights: str) -> Any:
        return timm.create_model(name, pretrained=False, num_classes=num_classes)

    return ModelEntry(ref, ("classify",), build)


def _user_entry(ref: str) -> ModelEntry:
    from study.core.references import resolve

    func = resolve(ref)
    if not callable(func):
        raise ConfigError(f"--model {ref}: {ref.partition(':')[2]} is a {type(func).__name__}, not a function "
                          f"that builds a model")
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

    def build(num_classes: int, task: str, image_size: int, weights: str) -> Any:
        kwargs = {k: v for k, v in (("task", task), ("image_size", image_size)) if takes_any or k in params}
        try:
            return func(num_classes, **kwargs)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 — whatever the user's builder raises is bad input here
            raise ConfigError(f"--model {ref}: {ref.partition(':')[2]}({num_classes}) raised "
                              f"{_last_line(e)}") from None

    return ModelEntry(ref, (), build)


def entry(ref: str) -> ModelEntry:
    """The ModelEntry `ref` names (a built-in or plug-in name, torchvision:NAME, timm:NAME, FILE.py:FUNC)."""
    if ref in REGISTRY:  # the built-ins register when study.models.builtins is imported, which build_model is in
        return REGISTRY[ref]
    head, _, name = ref.partition(":")
    if head == "torchvision" and name:
        return _torchvision_entry(ref, name)
    if head == "timm" and name:
        return _timm_entry(ref, name)
    if is_reference(ref):
        return _user_entry(ref)
    raise ConfigError(f"unknown model {ref!r}; choose one of: {', '.join(REGISTRY)}, torchvision:NAME, timm:NAME, "
                      f"or FILE.py:FUNCTION")


def check_task(e: ModelEntry, task: str) -> None:
    """ConfigError when a library's model cannot do a built-in task (a classifier for --task segment)."""
    if e.tasks and task in ("classify", "segment") and task not in e.tasks:
        kind = {"classify": "a classifier", "segment": "a segmentation model"}
        raise ConfigError(f"--model {e.name} is {kind[e.tasks[0]]}; --task {task} needs {kind[task]} "
                          f"(e.g. {'torchvision:deeplabv3_mobilenet_v3_large' if task == 'segment' else 'torchvision:mobilenet_v3_small'})")


def make(ref: str, num_classes: int, task: str, image_size: int, weights: str = "") -> tuple[Any, ModelEntry]:
    """(the model `ref` builds for `num_classes`, its entry); checked to be an nn.Module."""
    e = entry(ref)
    check_task(e, task)
    return _checked(ref, e.build(num_classes, task, image_size, weights)), e


def head_keys(e: ModelEntry, own: dict[str, Any], num_classes: int, task: str, image_size: int) -> set[str]:
    """The state-dict keys of the model's head: under its head modules, or (a plug-in) the tensors whose
    shape changes with the class count."""
    if e.heads is not None:
        return {k for k in own if k.split(".")[0] in e.heads}
    import torch

    with torch.device("meta"):
        other = _checked(e.name, e.build(num_classes + 1, task, image_size, "")).state_dict()
    return {k for k, v in own.items() if k not in other or tuple(other[k].shape) != tuple(v.shape)}
