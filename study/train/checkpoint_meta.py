"""What a trained checkpoint needs to be used on its own: its metadata, and the model it rebuilds.

Every checkpoint the loop saves carries a ``meta`` dict (model, task, classes, input size,
normalisation, dataset), so ``python -m study predict IMAGE --checkpoint CKPT`` needs no other flag
and a checkpoint copied off the machine still says what it is.

``read_meta`` is torch-free: it unpickles the checkpoint's ``data.pkl`` with every tensor and every
class replaced by an inert stand-in, so the command line refuses a checkpoint of another kind in
milliseconds, before paying for torch. Nothing from the file is ever imported or called.
"""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from study.core.config import MODEL_TASKS, TASKS, ConfigError, RunConfig

if TYPE_CHECKING:
    import torch

META_FORMAT = 1
META_KEYS = ("format", "model", "task", "num_classes", "classes", "image_size", "mean", "std", "dataset", "resize")

# How a picture is brought to the model's input, matching each dataset's validation transform:
# "square" resizes both sides to image_size; "crop" resizes the short side to image_size * 256/224
# and takes the centre square (the ImageNet evaluation recipe the ImageFolder reader uses).
RESIZE = {"cifar10": "square", "cifar100": "square", "oxford-pets": "square", "imagefolder": "crop", "cub200": "crop"}


def checkpoint_meta(cfg: RunConfig, num_classes: int, classes: list[str]) -> dict[str, Any]:
    """The ``meta`` dict of a checkpoint trained under ``cfg``; plain types only (weights_only loads)."""
    from study.core import catalog
    from study.core.config import is_reference
    from study.data.bundle import reader

    names = [str(c) for c in classes] if len(classes) == num_classes else [str(i) for i in range(num_classes)]
    meta = {"format": META_FORMAT, "model": cfg.model, "task": cfg.task, "num_classes": int(num_classes),
            "classes": names, "image_size": int(cfg.image_size), "mean": [], "std": [], "dataset": cfg.dataset,
            "resize": RESIZE.get(cfg.dataset, "square")}
    if cfg.model.partition(":")[0].endswith(".py"):  # a user's model file: where it was, for predict elsewhere
        meta["model_file"] = str(Path(cfg.model.partition(":")[0]).resolve())
    if not is_reference(cfg.dataset):  # a plug-in dataset has no reader, sizes or normalisation of ours
        mod = reader(cfg.dataset)  # the dataset's reader owns its normalisation constants
        meta.update(image_size=int(cfg.image_size or catalog.get(cfg.dataset).default_size),
                    mean=[float(v) for v in mod.MEAN], std=[float(v) for v in mod.STD])
    return meta


class _Inert:
    """Stands for any class or tensor in a checkpoint: accepts every call and every state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> "_Inert":
        return _Inert()

    def __setstate__(self, state: Any) -> None:
        pass


class _Dict(dict):
    """OrderedDict stand-in: a state dict pickles with a ``_metadata`` attribute, so it needs a __dict__."""


class _MetaUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return _Dict
        return _Inert

    def persistent_load(self, pid: Any) -> Any:
        return None  # tensor storages: never read


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta`` dict of a study checkpoint, read without torch. ConfigError (one line) for a
    missing file, a file torch.save did not write, or a checkpoint of another kind."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(p):
        raise ConfigError(f"{path} is not a PyTorch checkpoint (torch.save writes a zip archive)")
    try:
        with zipfile.ZipFile(p) as zf:
            pkl = next((n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pkl is None:
                raise ConfigError(f"{path} is not a PyTorch checkpoint (no data.pkl inside)")
            obj = _MetaUnpickler(io.BytesIO(zf.read(pkl))).load()
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 — any damage to the archive means the same to the user
        first = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(f"cannot read checkpoint {path}: damaged or not a checkpoint ({type(e).__name__} {first}".rstrip()
                          + ")") from None
    meta = obj.get("meta") if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        what = "a state dict or a checkpoint of another kind" if isinstance(obj, dict) else "no dict"
        raise ConfigError(f"{path} holds {what}, not a study checkpoint with metadata; use a checkpoint a study "
                          f"run saved (reports/<run>/checkpoints/<stage>.pt)")
    check_meta(meta, p)
    return meta


def check_meta(meta: dict[str, Any], path: Path) -> None:
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ConfigError(f"checkpoint {path} has incomplete metadata (missing {', '.join(missing)})")
    if meta["format"] != META_FORMAT:
        raise ConfigError(f"checkpoint {path} has metadata format {meta['format']!r}; this version reads {META_FORMAT}")
    from study.core.config import is_reference

    plugin = [f"--{k} {meta[k]}" for k in ("task", "dataset") if is_reference(str(meta[k]))]
    if plugin:
        raise ConfigError(f"checkpoint {path} was trained with {' and '.join(plugin)}; predict and the pictures "
                          f"know the built-in tasks and datasets only (its weights are under 'model': "
                          f"torch.load(PATH)['model'] into your model)")
    plugin_model = ":" in str(meta["model"])  # torchvision:/timm:/the user's builder: the registry rebuilds it
    if meta["task"] not in TASKS or not (plugin_model or meta["task"] in MODEL_TASKS.get(meta["model"], ())):
        raise ConfigError(f"checkpoint {path} names model {meta['model']!r} for task {meta['task']!r}, which "
                          f"this version cannot build")
    if len(meta["classes"]) != meta["num_classes"] or len(meta["mean"]) != 3 or len(meta["std"]) != 3:
        raise ConfigError(f"checkpoint {path} has inconsistent metadata (classes or normalisation)")


def device_for(name: str = "auto") -> "torch.device":
    import torch

    if name.startswith("cuda") or (name == "auto" and torch.cuda.is_available()):
        return torch.device(name if name.startswith("cuda") else "cuda")
    return torch.device("cpu")


def model_reference(meta: dict[str, Any]) -> str:
    """The checkpoint's --model; a FILE.py:FUNC given relative to where the study ran is found from any
    folder through the absolute path the checkpoint also records."""
    ref, absolute = str(meta["model"]), str(meta.get("model_file") or "")
    head, _, func = ref.partition(":")
    if head.endswith(".py") and not Path(head).is_file() and absolute and Path(absolute).is_file():
        return f"{absolute}:{func}"
    return ref


def load_model(path: str | Path, device: "torch.device | None" = None) -> tuple["torch.nn.Module", dict[str, Any]]:
    """(model in eval mode on `device`, meta + "trained_steps") from a study checkpoint."""
    import torch

    from study.models.builtins import build_model

    meta = read_meta(path)
    cfg = RunConfig(task=meta["task"], model=model_reference(meta), dataset=meta["dataset"],
                    image_size=int(meta["image_size"]))
    model = build_model(cfg, meta["num_classes"])
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as e:
        raise ConfigError(f"checkpoint {path}: weights do not fit model {meta['model']!r}: "
                          f"{str(e).splitlines()[0]}") from None
    return model.to(device or torch.device("cpu")).eval(), {**meta, "trained_steps": int(state.get("step", 0))}


def preprocess(image: Any, meta: dict[str, Any]) -> tuple["torch.Tensor", Any]:
    """(normalised 1x3xSxS input, the RGB PIL picture the model sees) as the validation transform makes them."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    size = int(meta["image_size"])
    image = image.convert("RGB")
    if meta["resize"] == "crop":
        view = F.center_crop(F.resize(image, round(size * 256 / 224), InterpolationMode.BILINEAR, antialias=True),
                             [size, size])
    else:
        view = F.resize(image, [size, size], InterpolationMode.BILINEAR, antialias=True)
    x = F.normalize(F.to_tensor(view), meta["mean"], meta["std"])
    return x.unsqueeze(0), view


def denormalize(x: "torch.Tensor", mean: list[float], std: list[float]) -> "torch.Tensor":
    """Nx3xHxW normalised input → the same pictures as floats in [0, 1]."""
    import torch

    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * s + m).clamp(0, 1)
