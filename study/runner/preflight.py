"""What the parent checks once, before any stage starts: bad input is exit 2 up front, not a ladder
of stages that each fail the same way an hour later.

- samples: a few items of each split are read through the real reader and transform (files that do
  not decode, trimaps in another convention, labels out of range), and every label the reader holds
  in memory is checked;
- model: the model is built on the meta device (no memory, no compute) and one training forward and
  loss of a full batch is traced, so a model/task/dataset/batch combination that cannot train is
  named here; the weights file is read and must fit the backbone (models.MIN_BACKBONE_MATCH);
- resume: with --resume, every checkpoint of the run must be readable and come from this model.

The parent imports torch for this, once; the stages themselves run in their own processes.
"""
from __future__ import annotations

import numbers
import zipfile
from pathlib import Path
from typing import Any

import torch

from study.core.config import ConfigError, RunConfig, is_reference
from study.core import catalog
from study.data import DataBundle
from study.models.facts import ModelFacts, facts_of
from study.data.bundle import SAMPLES_PER_SPLIT, all_targets, sample_indices  # noqa: F401
from study.data.integrity import remake_hint



def _where(cfg: RunConfig) -> str:
    if is_reference(cfg.dataset):
        return f"--dataset {cfg.dataset}"
    entry = catalog.get(cfg.dataset)
    return f"{entry.title} at {cfg.data_root.rstrip('/')}/{entry.folder}"


def _flat(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if type(e).__name__ == "SampleError" else f"{type(e).__name__}: {text}"


def check_sample(cfg: RunConfig, split: str, index: int, item: Any, num_classes: int) -> None:
    where = f"{_where(cfg)}: {split} sample {index}"
    plugin = is_reference(cfg.dataset)
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
        if plugin:
            raise ConfigError(f"{where} is of type {type(item).__name__}, not an (input, target) pair; its datasets' "
                              f"items must be (input, target)")
        raise ConfigError(f"{where} is not an (image, target) pair; the reader of {cfg.dataset} is broken")
    x, y = item
    if plugin and (is_reference(cfg.task) or cfg.task == "classify"):
        check_plugin_sample(cfg, where, x, y, num_classes)
        return
    if not (isinstance(x, torch.Tensor) and x.ndim == 3 and x.shape[0] == 3 and x.is_floating_point()):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(f"{where} is not a 3-channel image (got {shape}); convert the dataset's images to RGB")
    if cfg.task == "classify":
        # numbers.Integral: Python ints and numpy's (numpy-written label files hold np.int64)
        scalar = (isinstance(y, numbers.Integral) and not isinstance(y, bool)) or (
            isinstance(y, torch.Tensor) and y.numel() == 1 and not y.is_floating_point())
        if not scalar or not 0 <= int(y) < num_classes:
            raise ConfigError(f"{where} has label {y!r}, outside the {num_classes} classes of the dataset; the "
                              f"label files are damaged: {remake_hint(cfg.data_root, cfg.dataset)}")
    else:
        if not (isinstance(y, torch.Tensor) and tuple(y.shape) == tuple(x.shape[1:])):
            raise ConfigError(f"{where}: its mask does not match the image's size; "
                              f"{remake_hint(cfg.data_root, cfg.dataset)}")
        bad = set(torch.unique(y).tolist()) - set(range(num_classes)) - {255}
        if bad:
            raise ConfigError(f"{where}: mask values {sorted(bad)[:5]} are no class of {num_classes} (nor 255, ignored); "
                              f"{remake_hint(cfg.data_root, cfg.dataset)}")


def check_plugin_sample(cfg: RunConfig, where: str, x: Any, y: Any, num_classes: int) -> None:
    """A user's dataset: the input a tensor (the loaders stack it); for the classify task the target an
    integer class in range. A plug-in task's targets are its own to judge."""
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"{where}: its input is a {type(x).__name__}, not a tensor")
    if cfg.task != "classify":
        return
    scalar = (isinstance(y, int) and not isinstance(y, bool)) or (
        isinstance(y, torch.Tensor) and y.numel() == 1 and not y.is_floating_point())
    if not scalar or not 0 <= int(y) < num_classes:
        raise ConfigError(f"{where} has target {y!r}, not an integer class in 0..{num_classes - 1}; a classify "
                          f"dataset's targets are class indices (return the classes, or give the train dataset "
                          f"a num_classes attribute)")


def check_samples(cfg: RunConfig, bundle: DataBundle) -> tuple[Any, Any]:
    """Read SAMPLES_PER_SPLIT items of each split; returns the first training item (image, target)."""
    hint = (f"replace or delete that file, or {remake_hint(cfg.data_root, cfg.dataset)}"
            if not is_reference(cfg.dataset) else "fix the dataset's __getitem__")
    first = None
    for split, ds in (("train", bundle.train), ("val", bundle.val)):
        n = len(ds)
        if n == 0:
            raise ConfigError(f"the {split} split of {_where(cfg)} is empty" +
                              ("" if is_reference(cfg.dataset) else f"; {remake_hint(cfg.data_root, cfg.dataset)}"))
        targets = all_targets(ds)
        if targets and (cfg.task in ("classify", "segment")):
            lo, hi = min(targets), max(targets)
            if lo < 0 or hi >= bundle.num_classes:
                raise ConfigError(f"{_where(cfg)}: the {split} labels run from {lo} to {hi}, outside the "
                                  f"{bundle.num_classes} classes; the label files are damaged: "
                                  f"{remake_hint(cfg.data_root, cfg.dataset)}")
        for i in sample_indices(n):
            try:
                item = ds[i]
            except Exception as e:  # noqa: BLE001 — whatever the decoder raises, with the file it names
                raise ConfigError(f"{_where(cfg)}: {split} {_flat(e)}; {hint}") from None
            check_sample(cfg, split, i, item, bundle.num_classes)
            if first is None:
                first = item
    return first


def _forward_and_loss(cfg: RunConfig, task: Any, model: Any, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> str:
    """One training forward and loss; why the output does not fit the task ("" when it does)."""
    from study.models.builtins import output_problem

    out = model(x)
    problem = output_problem(cfg.task, out, tuple(x.shape), num_classes)
    if not problem:
        task.loss(out, y)
    return problem


def check_model(cfg: RunConfig, bundle: DataBundle, sample: tuple[Any, Any]) -> tuple[dict[str, torch.Tensor], ModelFacts]:
    """Build the model on meta, check the weights file against it, trace one training step's forward
    and loss at the real batch size. Returns the model's state dict (meta tensors: names and shapes)
    and what the toggles may ask of it."""
    from study.models.builtins import build_model, check_weights
    from study.train.tasks import build_task

    with torch.device("meta"):
        model = build_model(cfg.replace(weights=""), bundle.num_classes)
    own = model.state_dict()
    if cfg.weights:
        # The file is read here once, so a bad one is exit 2 and not a failed stage; the stages load it again.
        check_weights(cfg, own, bundle.num_classes)
    x0, y0 = sample
    task = build_task(cfg.task, bundle.num_classes)  # a plug-in task's class is imported and checked here
    x = torch.empty((cfg.batch_size, *x0.shape), dtype=x0.dtype, device="meta")
    # built-in tasks take class indices; a plug-in task its targets' own dtype
    dtype = y0.dtype if isinstance(y0, torch.Tensor) and is_reference(cfg.task) else torch.long
    if isinstance(y0, torch.Tensor) and y0.ndim > 0:
        y = torch.empty((cfg.batch_size, *y0.shape), dtype=dtype, device="meta")
    else:
        y = torch.empty((cfg.batch_size,), dtype=dtype, device="meta")
    model.train()
    problem = ""
    try:
        try:
            problem = _forward_and_loss(cfg, task, model, x, y, bundle.num_classes)
        except (RuntimeError, NotImplementedError) as e:
            if "meta" not in str(e):
                raise
            # A forward that reads its data (data-dependent control flow: .item(), float(x)) cannot run on
            # meta: it runs once on the CPU instead, with a batch of two (real values, little memory).
            with torch.no_grad():
                cpu_model = build_model(cfg.replace(weights=""), bundle.num_classes).train()
                problem = _forward_and_loss(cfg, task, cpu_model, torch.randn((2, *x0.shape)).to(x0.dtype),
                                            torch.zeros((2, *y.shape[1:]), dtype=y.dtype), bundle.num_classes)
    except Exception as e:  # noqa: BLE001 — a shape the model cannot take is bad input, not a stage failure
        if is_reference(cfg.dataset):
            raise ConfigError(f"model {cfg.model} cannot train on {_where(cfg)} (inputs {tuple(x0.shape)}) with "
                              f"--task {cfg.task} and --batch-size {cfg.batch_size} ({_flat(e)[:200]}); make the "
                              f"model, the task and the dataset agree") from None
        size = "x".join(str(s) for s in x0.shape[1:])
        raise ConfigError(f"model {cfg.model} cannot train on {catalog.get(cfg.dataset).title} at {size} px with "
                          f"--batch-size {cfg.batch_size} ({_flat(e)[:200]}); change --image-size or --batch-size, "
                          f"or pick another --model") from None
    if problem:  # a plug-in model whose output does not fit the task (a built-in's always does)
        raise ConfigError(f"--model {cfg.model}: {problem}")
    return own, facts_of(model, x0)


def _checkpoint_problem(path: Path, cfg: RunConfig, own: dict[str, torch.Tensor], num_classes: int) -> str:
    """Why the checkpoint at ``path`` cannot resume this study's model, or "" when it can."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:  # noqa: BLE001 — any damage means the same to the user
        from study.models.builtins import load_failure

        return f"cannot be read ({load_failure(path, e)})"
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        return "is not a study checkpoint (no model state)"
    meta = state.get("meta") or {}
    if meta:
        saved = (meta.get("model"), meta.get("task"), meta.get("num_classes"))
        if saved != (cfg.model, cfg.task, num_classes):
            return (f"was saved by model {saved[0]} for task {saved[1]} with {saved[2]} classes; this study trains "
                    f"{cfg.model} for {cfg.task} with {num_classes}")
    theirs = state["model"]
    differ = sorted(k for k in own.keys() | theirs.keys()
                    if k not in own or k not in theirs or tuple(own[k].shape) != tuple(theirs[k].shape))
    if differ:
        return (f"holds another model: {len(differ)} of its tensors do not fit {cfg.model} with {num_classes} "
                f"classes (e.g. {differ[0]!r})")
    return ""


def check_resume(cfg: RunConfig, own: dict[str, torch.Tensor], num_classes: int) -> None:
    """With --resume, every checkpoint of the run must fit this study's model before any stage loads one."""
    folder = cfg.report_dir / "checkpoints"
    if not cfg.resume or not folder.is_dir():
        return
    for path in sorted(folder.glob("*.pt")):
        problem = _checkpoint_problem(path, cfg, own, num_classes)
        if problem:
            raise ConfigError(f"--resume: checkpoint {path} {problem}; delete it to train its stage afresh, or use "
                              f"another --run-name")


def check_target(cfg: RunConfig, num_classes: int) -> None:
    """--until names a metric the task computes (where the task says what it computes)."""
    from study.train.tasks import build_task
    from study.core.target import parse_target

    target = parse_target(cfg.until)
    names = build_task(cfg.task, num_classes).metric_names if target is not None else ()
    if names and target.metric not in names:
        raise ConfigError(f"--until {cfg.until}: task {cfg.task} measures {', '.join(names)}, not {target.metric}; "
                          f"e.g. --until {names[0]}=0.5")


def run(cfg: RunConfig, bundle: DataBundle) -> ModelFacts:
    """Every preflight check, cheapest first; ConfigError (one line) for the first problem found.
    Returns the model's facts, from which the ladder skips toggles that cannot apply to it."""
    sample = check_samples(cfg, bundle)
    check_target(cfg, bundle.num_classes)
    own, facts = check_model(cfg, bundle, sample)
    check_resume(cfg, own, bundle.num_classes)
    return facts
