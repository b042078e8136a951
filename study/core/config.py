"""RunConfig: everything one stage needs, frozen, JSON-serializable, validated on construction."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from study.core import catalog
from study.core.errors import ConfigError  # noqa: F401 — the name every module imports from here
from study.core.stage_plan import PLAN_FIELDS
from study.core.target import parse_target
from study.core.config_checks import LIBRARIES, check_launch, check_reference, check_s3_endpoint, is_reference


TASKS = ("classify", "segment")
MODELS = ("resnet50", "resnet18", "deeplabv3_resnet101", "vgg_attention", "tiny")
DATASETS = tuple(d.name for d in catalog.DATASETS)
DEFAULT_MODEL = {"classify": "resnet50", "segment": "deeplabv3_resnet101"}
DEFAULT_DATASET = {"classify": "cifar10", "segment": "oxford-pets"}
MODEL_TASKS = {"resnet50": ("classify",), "resnet18": ("classify",), "deeplabv3_resnet101": ("segment",),
               "vgg_attention": ("classify",), "tiny": ("classify", "segment")}
DATASET_TASKS = {d.name: (d.task,) for d in catalog.DATASETS}
PROFILE_PASSES = ("cprofile", "torch", "pyspy", "lines")
DRY_RUN_MAX_SIDE = 64
# File systems take names of 255 bytes; a run's files add their own suffixes to its name.
MAX_RUN_NAME = 200
DRY_RUN_SEGMENT_BATCH = 4
DRY_RUN_MAX_SUBSET = 512


def option(default: Any, *, measured: bool = True) -> Any:
    """A config field; `measured=False` keeps it out of the hash that says whether two stages measured
    the same thing (where outputs go, how long the search may take)."""
    return field(default=default, metadata={"measured": measured})


# --- the sections --------------------------------------------------------------------------------
# Each section is a kw-only dataclass whose field docstrings become --help. RunConfig inherits them
# all, so a field is read flat (cfg.batch_size, as the flat CLI and config files name it) and a name
# means one thing across sections; SECTIONS says which section owns which field.


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    task: str = "classify"
    """`classify` (top-1/top-5) or `segment` (per-class IoU, mIoU)."""
    model: str = ""
    """resnet50 | resnet18 | deeplabv3_resnet101 | vgg_attention | tiny; empty picks the task's default."""
    weights: str = ""
    """Local state-dict file loaded into the model before the head is replaced (transfer learning)."""
    freeze_backbone: bool = False
    """Train only the new head."""


@dataclass(frozen=True, kw_only=True)
class DataOptions:
    dataset: str = ""
    """cifar10 | cifar100 | cub200 | oxford-pets | imagefolder; empty picks the task's default."""
    coarse_labels: bool = False
    """cifar100: train on the release's 20 coarse superclasses instead of its 100 fine classes."""
    crop_to_box: bool = False
    """cub200: crop each image to its box in bounding_boxes.txt before the transforms."""
    data_root: str = "data"
    """Folder holding the dataset in its native layout, or s3://bucket/prefix."""
    image_size: int = 0
    """Input side in pixels; 0 keeps the dataset's default (CIFAR 32, ImageFolder 224, Pets 256)."""
    subset: int = 0
    """Use at most this many training samples (0: all)."""
    val_subset: int = 0
    """Use at most this many validation samples (0: all)."""
    s3_endpoint: str = ""
    """Endpoint URL for S3-compatible stores (else AWS_ENDPOINT_URL or AWS)."""
    s3_cache: str = ""
    """Download objects once into this folder; empty streams every sample from the store."""


@dataclass(frozen=True, kw_only=True)
class TrainingOptions:
    batch_size: int = 32
    """Samples per step per process."""
    epochs: int = 1
    """Passes over the (sub)set."""
    steps: int = 0
    """Cap on training steps per epoch (0: whole epoch)."""
    val_steps: int = 0
    """Cap on validation steps per epoch (0: whole validation set)."""
    lr: float = 0.01
    """SGD learning rate."""
    momentum: float = 0.9
    """SGD momentum."""
    weight_decay: float = 5e-4
    """SGD weight decay."""
    seed: int = 0
    """Seed for model init, data order and augmentation."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N."""
    threads: int = 0
    """torch intra-op threads per process (0: torch's default)."""
    checkpoint_every: int = 0
    """Save a checkpoint every N training steps (0: only at the end)."""
    log_every: int = 10
    """Write a TensorBoard scalar every N steps."""


@dataclass(frozen=True, kw_only=True)
class MeasuringOptions:
    stack: tuple[str, ...] = ()
    """Toggles applied cumulatively, one stage each, e.g. ("workers=4", "pin", "amp")."""
    warmup: int = 2
    """Training steps at the start excluded from timing (allocator, cudnn autotune, lazy init)."""
    repeats: int = 1
    """Timed runs per stage; median and 95% CI are taken over them."""
    ablate: bool = False
    """Also run leave-one-out stages on the full stack."""
    busy_retries: int = option(-1, measured=False)
    """Measure a timing run again, at most this many times, when others used 20 % or more of the machine
    during it (-1: $STUDY_BUSY_RETRIES, else 2; 0: never; a dry run never does)."""
    until: str = ""
    """METRIC=VALUE: train each stage until its validation metric reaches it and record the time taken."""
    until_every: int = 0
    """With --until, validate every N training steps (0: four times an epoch)."""
    until_minutes: float = 30.0
    """With --until, stop a stage that has not reached the target after this many minutes."""
    dry_run: bool = False
    """Tiny study: few steps, small subset, one epoch, checkpoint save and reload."""
    sanity: bool = option(False, measured=False)
    """Before the ladder, check that the pipeline learns at all: the baseline model must overfit one fixed
    small batch (every dry run does this)."""
    budget_minutes: float = option(20.0, measured=False)
    """--stack auto: wall time for the whole study, search and the chosen stack's ladder; the search stops
    starting candidates in time for the ladder, and the search table marks what the budget cut."""


@dataclass(frozen=True, kw_only=True)
class ProfilingOptions:
    profile: tuple[str, ...] = option((), measured=False)
    """Profiling passes run after each stage's timing pass: cprofile, torch, pyspy, lines."""
    profile_steps: int = 6
    """Steps in each profiling pass (torch.profiler: wait 1, warmup 1, active the rest)."""
    trace_shapes: bool = option(False, measured=False)
    """torch.profiler: record input shapes per operator (bigger trace)."""
    trace_memory: bool = option(False, measured=False)
    """torch.profiler: record allocations (memory view)."""
    trace_stack: bool = option(False, measured=False)
    """torch.profiler: record Python stacks (much bigger trace)."""
    trace_budget_mb: float = option(20.0, measured=False)
    """Warn when a torch.profiler trace is larger than this (TensorBoard loads it slowly)."""
    no_pictures: bool = option(False, measured=False)
    """Skip the pictures drawn after the ladder (confusion matrix and CAM grid, or the segmentation overlays)."""


@dataclass(frozen=True, kw_only=True)
class OutputOptions:
    run_name: str = option("", measured=False)
    """Name of the study; outputs go to profiles/<run_name>/ and reports/<run_name>/."""
    profiles_root: str = option("profiles", measured=False)
    """Root for traces and per-stage profiler output."""
    reports_root: str = option("reports", measured=False)
    """Root for results.jsonl, records.csv, tables and plots."""
    resume: bool = option(False, measured=False)
    """Skip stages already finished in reports/<run_name>/results.jsonl; resume from checkpoints."""
    keep_checkpoints: bool = option(False, measured=False)
    """Keep every stage's full checkpoint (weights and optimizer state); by default a finished stage keeps
    only the weights that the pictures pass and `study predict` read, of the last stage."""


@dataclass(frozen=True, kw_only=True)
class LaunchOptions:
    nnodes: int = 1
    """Nodes taking part; node 0 leads the study, the others join its DDP stages (Slurm's, under srun)."""
    node_rank: int = 0
    """This node's rank: 0 leads (under srun: Slurm's node id)."""
    rdzv_endpoint: str = ""
    """host:port of node 0 for a multi-node study (under srun: the node list's first host)."""
    rdzv_timeout: float = option(300.0, measured=False)
    """Seconds a multi-node stage waits for every node, and a follower for the leader's next stage."""
    ray_address: str = option("", measured=False)
    """--stack auto on every node of a Ray cluster at once (ray.init's address: HOST:6379, or auto on a node
    of it): each node measures its own pairs of a round; needs the 'cluster' extra on every node."""


# In --help order. Loader and launch settings that toggles decide are not here: they are the stage's
# Plan (study.core.stage_plan), written only by the toggles' configure().
SECTIONS: dict[str, type] = {"model": ModelOptions, "data": DataOptions, "training": TrainingOptions,
                             "measuring": MeasuringOptions, "profiling": ProfilingOptions,
                             "outputs": OutputOptions, "launch": LaunchOptions}


@dataclass(frozen=True, kw_only=True)
class RunConfig(LaunchOptions, OutputOptions, ProfilingOptions, MeasuringOptions, TrainingOptions, DataOptions,
                ModelOptions):
    """What the user chose, validated on construction, frozen, JSON-serializable."""

    def __post_init__(self) -> None:
        def fix(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        self.check_types()
        self.check_names()
        if self.task in TASKS and self.dataset in DATASETS and self.task not in DATASET_TASKS[self.dataset]:
            fit = [d for d in DATASETS if self.task in DATASET_TASKS[d]]
            raise ConfigError(f"dataset {self.dataset!r} has no labels for task {self.task!r}; datasets for it: "
                              f"{', '.join(fit)}")
        if self.crop_to_box and self.dataset != "cub200":
            raise ConfigError(f"--crop-to-box crops to CUB-200-2011's bounding boxes; --dataset {self.dataset} has none")
        if self.coarse_labels and self.dataset != "cifar100":
            raise ConfigError(f"--coarse-labels is CIFAR-100's superclasses; --dataset {self.dataset} has one label set")
        for name in ("batch_size", "epochs", "repeats", "nnodes", "log_every", "profile_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        parse_target(self.until)  # METRIC=VALUE, or one line saying the form
        check_launch(self.nnodes, self.node_rank, self.rdzv_endpoint, self.rdzv_timeout)
        if self.busy_retries < -1:
            raise ConfigError(f"--busy-retries must be 0 or more (-1: the default), got {self.busy_retries}")
        if not (math.isfinite(self.until_minutes) and self.until_minutes > 0):
            raise ConfigError(f"--until-minutes must be a positive number, got {self.until_minutes}")
        for name in ("image_size", "subset", "val_subset", "steps", "val_steps", "warmup", "threads",
                     "checkpoint_every", "node_rank", "until_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"--lr must be a finite positive number, got {self.lr}")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ConfigError(f"--momentum must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"--weight-decay must be a finite number >= 0, got {self.weight_decay}")
        device, _, index = self.device.partition(":")
        if device not in ("auto", "cpu", "cuda", "mps") or (index and not (device == "cuda" and index.isdigit())):
            raise ConfigError(f"--device {self.device!r}: use auto, cpu, cuda, cuda:N or mps, as torch spells them")
        if len(self.run_name.encode()) > MAX_RUN_NAME:
            raise ConfigError(f"--run-name is {len(self.run_name.encode())} bytes; at most {MAX_RUN_NAME} (it names "
                              f"folders and files), pick a shorter one")
        fix("stack", tuple(self.stack))
        if "auto" in self.stack and len(self.stack) > 1:
            raise ConfigError("--stack auto searches the toggles itself; give it alone, not with "
                              f"{', '.join(t for t in self.stack if t != 'auto')}")
        if self.budget_minutes <= 0:
            raise ConfigError(f"--budget-minutes must be positive, got {self.budget_minutes}")
        fix("profile", tuple(self.profile))
        for p in self.profile:
            if p not in PROFILE_PASSES:
                raise ConfigError(f"unknown profiling pass {p!r}; choose from: {', '.join(PROFILE_PASSES)}, all")
        check_s3_endpoint(self.s3_endpoint)
        if self.s3_cache and not self.is_s3:
            raise ConfigError("--s3-cache needs an s3://bucket/prefix --data-root")
        if not self.run_name:
            fix("run_name", "study")
        if "/" in self.run_name or self.run_name in (".", ".."):
            raise ConfigError(f"--run-name must be a plain name, got {self.run_name!r}")
        if self.dry_run:
            # Tiny everything, but still the whole pipeline (validation, checkpoint, reload): 5 measured
            # steps after 2 warm-up steps, and inputs no larger than DRY_RUN_MAX_SIDE, so every task's dry
            # run takes minutes (DeepLabV3-ResNet101 at 256 px, batch 32, takes minutes per step on a CPU).
            fix("epochs", 1)
            fix("steps", min(self.steps or 7, 7))
            native = catalog.get(self.dataset).default_size if self.dataset in DATASETS else 0  # a plug-in's: its own
            if (self.image_size or native) > DRY_RUN_MAX_SIDE:
                fix("image_size", DRY_RUN_MAX_SIDE)
            if self.task == "segment":
                fix("batch_size", min(self.batch_size, DRY_RUN_SEGMENT_BATCH))
            fix("val_steps", min(self.val_steps or 2, 2))
            fix("warmup", min(self.warmup, 2))
            fix("subset", min(self.subset or DRY_RUN_MAX_SUBSET, DRY_RUN_MAX_SUBSET))  # DDP ranks split it too
            fix("val_subset", min(self.val_subset or 64, 64))
            fix("profile_steps", min(self.profile_steps, 4))
            if not self.checkpoint_every:
                fix("checkpoint_every", 3)
        if self.steps and self.warmup >= self.steps * self.epochs:
            raise ConfigError(f"--warmup {self.warmup} with --steps {self.steps} x --epochs {self.epochs} leaves no "
                              f"measured step; raise --steps or lower --warmup (warm-up steps are never timed)")

    def check_names(self) -> None:
        """Task, model and dataset: built-in names (checked against each other) or references to a
        library's model or the user's code (checked for their form here, imported in the preflight)."""
        def fix(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if is_reference(self.task):
            check_reference(self.task, "task")
            if not self.model or not self.dataset:
                raise ConfigError(f"--task {self.task} is a plug-in task: give its --model and --dataset too")
        elif self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}; choose one of: {', '.join(TASKS)}, or give FILE.py:CLASS")
        if not self.model:
            fix("model", DEFAULT_MODEL[self.task])
        if not self.dataset:
            fix("dataset", DEFAULT_DATASET[self.task])
        head, sep, name = self.model.partition(":")
        if sep and head in LIBRARIES:
            if not name:
                raise ConfigError(f"--model {self.model}: name the model, e.g. {head}:{'mobilenet_v3_small' if head == 'torchvision' else 'resnet18'}")
        elif sep:
            check_reference(self.model, "model")
        elif self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of: {', '.join(MODELS)}, torchvision:NAME, "
                              f"timm:NAME, or FILE.py:FUNCTION")
        elif self.task in TASKS and self.task not in MODEL_TASKS[self.model]:
            fit = [m for m in MODELS if self.task in MODEL_TASKS[m]]
            raise ConfigError(f"model {self.model!r} does not do task {self.task!r}; models for it: {', '.join(fit)}")
        if ":" in self.dataset:
            check_reference(self.dataset, "dataset")
        elif self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; choose one of: {', '.join(DATASETS)}, or give "
                              f"FILE.py:FUNCTION")

    def check_types(self) -> None:
        """Values from a config file arrive typed by YAML/TOML, not by argparse: refuse a wrong kind by
        name (batch_size: "32", lr: [0.1], dry_run: "yes") before any comparison trips over it."""
        kinds = {"int": ((int,), "a whole number"), "float": ((int, float), "a number"),
                 "bool": ((bool,), "true or false"), "str": ((str,), "a string")}
        for f in fields(self):
            value = getattr(self, f.name)
            if str(f.type).startswith("tuple"):
                ok = isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value)
                want = "a list of names (or one comma-separated string)"
            else:
                types, want = kinds[str(f.type)]
                if str(f.type) == "int" and isinstance(value, float) and value.is_integer():
                    value = int(value)  # steps: 1e3 is a whole number, as a config file may write it
                    object.__setattr__(self, f.name, value)
                ok = isinstance(value, types) and (bool in types or not isinstance(value, bool))
            if not ok:
                raise ConfigError(f"config value {f.name} must be {want}, got {value!r} ({type(value).__name__}); "
                                  f"fix it in the config file or give --{f.name.replace('_', '-')}")

    # --- helpers -------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """From flat keys (config.json, a stage spec) or a config file's sections ({"training": {...}})."""
        flat = flatten_sections(d)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(flat) - names)
        planned = [k for k in unknown if k in PLAN_FIELDS]
        if planned:
            raise ConfigError(f"{planned[0]} is not an option: the stage's toggles decide it (see `study list`), "
                              f"so the baseline stays the plain loop; remove it from the config")
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)}; the keys are the long options of "
                              f"`study --help` (batch_size or batch-size for --batch-size)")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in flat.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def hash(self) -> str:
        """Hash of what changes a measurement (not where outputs go, resume flags or the search's budget)."""
        d = {f.name: v for f, v in zip(fields(self), self.to_dict().values()) if f.metadata.get("measured", True)}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def report_dir(self) -> Path:
        return Path(self.reports_root) / self.run_name

    @property
    def profile_dir(self) -> Path:
        return Path(self.profiles_root) / self.run_name

    @property
    def is_s3(self) -> bool:
        return self.data_root.startswith("s3://")


def flatten_sections(d: dict[str, Any]) -> dict[str, Any]:
    """A config file may group options by section (training: {batch_size: 8}); options are flat."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k in SECTIONS and isinstance(v, dict):
            own = {f.name for f in fields(SECTIONS[k])}
            for name, value in v.items():
                name = str(name).replace("-", "_")
                if name not in own:
                    where = next((s for s, c in SECTIONS.items() if name in {f.name for f in fields(c)}), "")
                    raise ConfigError(f"{name} is not in the {k} section" + (f"; it belongs to {where}" if where else
                                      "; see `study --help`"))
                out[name] = value
        else:
            out[k] = v
    return out


def section_of(name: str) -> str:
    return next((s for s, c in SECTIONS.items() if name in {f.name for f in fields(c)}), "")
