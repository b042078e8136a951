"""RunConfig: everything one stage needs, frozen, JSON-serializable, validated on construction."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """Bad user input. The CLI turns it into one line on stderr and exit code 2."""


TASKS = ("classify", "segment")
MODELS = ("resnet50", "resnet18", "deeplabv3_resnet101", "tiny")
DATASETS = ("cifar10", "oxford-pets", "imagefolder")
DEFAULT_MODEL = {"classify": "resnet50", "segment": "deeplabv3_resnet101"}
DEFAULT_DATASET = {"classify": "cifar10", "segment": "oxford-pets"}
MODEL_TASKS = {
    "resnet50": ("classify",),
    "resnet18": ("classify",),
    "deeplabv3_resnet101": ("segment",),
    "tiny": ("classify", "segment"),
}
DATASET_TASKS = {"cifar10": ("classify",), "imagefolder": ("classify",), "oxford-pets": ("segment",)}
PROFILE_PASSES = ("cprofile", "torch", "pyspy", "lines")
DRY_RUN_MAX_SIDE = 64
DRY_RUN_SEGMENT_BATCH = 4


def check_s3_endpoint(endpoint: str) -> None:
    """ConfigError unless `endpoint` is "" or an http(s)://host[:port] URL without credentials. The one
    rule for --s3-endpoint and AWS_ENDPOINT_URL alike; the message never echoes the URL, which may hold
    a secret."""
    if not endpoint:
        return
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("the S3 endpoint (--s3-endpoint or AWS_ENDPOINT_URL) must be an http(s)://host[:port] URL")
    if parts.username or parts.password:  # config.json would keep them: refuse
        raise ConfigError("the S3 endpoint must not carry credentials (user:password@); use the standard "
                          "AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws)")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    # --- what to train -------------------------------------------------------------------------
    task: str = "classify"
    """`classify` (top-1/top-5) or `segment` (per-class IoU, mIoU)."""
    model: str = ""
    """resnet50 | resnet18 | deeplabv3_resnet101 | tiny; empty picks the task's default."""
    dataset: str = ""
    """cifar10 | oxford-pets | imagefolder; empty picks the task's default."""
    data_root: str = "data"
    """Folder holding the dataset in its native layout, or s3://bucket/prefix."""
    image_size: int = 0
    """Input side in pixels; 0 keeps the dataset's default (CIFAR 32, ImageFolder 224, Pets 256)."""
    subset: int = 0
    """Use at most this many training samples (0: all)."""
    val_subset: int = 0
    """Use at most this many validation samples (0: all)."""
    weights: str = ""
    """Local state-dict file loaded into the model before the head is replaced (transfer learning)."""
    freeze_backbone: bool = False
    """Train only the new head."""

    # --- how long and how ----------------------------------------------------------------------
    batch_size: int = 32
    """Samples per step per process."""
    epochs: int = 1
    """Passes over the (sub)set."""
    steps: int = 0
    """Cap on training steps per epoch (0: whole epoch)."""
    val_steps: int = 0
    """Cap on validation steps per epoch (0: whole validation set)."""
    warmup: int = 2
    """Training steps at the start excluded from timing (allocator, cudnn autotune, lazy init)."""
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

    # --- the study -----------------------------------------------------------------------------
    run_name: str = ""
    """Name of the study; outputs go to profiles/<run_name>/ and reports/<run_name>/."""
    stack: tuple[str, ...] = ()
    """Toggles applied cumulatively, one stage each, e.g. ("workers=4", "pin", "amp")."""
    repeats: int = 1
    """Timed runs per stage; median and 95% CI are taken over them."""
    profile: tuple[str, ...] = ()
    """Profiling passes run after each stage's timing pass: cprofile, torch, pyspy, lines."""
    profile_steps: int = 6
    """Steps in each profiling pass (torch.profiler: wait 1, warmup 1, active the rest)."""
    trace_shapes: bool = False
    """torch.profiler: record input shapes per operator (bigger trace)."""
    trace_memory: bool = False
    """torch.profiler: record allocations (memory view)."""
    trace_stack: bool = False
    """torch.profiler: record Python stacks (much bigger trace)."""
    trace_budget_mb: float = 20.0
    """Warn when a torch.profiler trace is larger than this (TensorBoard loads it slowly)."""
    ablate: bool = False
    """Also run leave-one-out stages on the full stack."""
    sanity: bool = False
    """Before the ladder, check that the pipeline learns at all: the baseline model must overfit one fixed
    small batch (every dry run does this)."""
    no_pictures: bool = False
    """Skip the pictures drawn after the ladder (confusion matrix and CAM grid, or the segmentation overlays)."""
    budget_minutes: float = 20.0
    """--stack auto: wall time for the whole study, search and the chosen stack's ladder; the search stops
    starting candidates in time for the ladder, and the search table marks what the budget cut."""
    profiles_root: str = "profiles"
    """Root for traces and per-stage profiler output."""
    reports_root: str = "reports"
    """Root for results.jsonl, records.csv, tables and plots."""
    dry_run: bool = False
    """Tiny study: few steps, small subset, one epoch, checkpoint save and reload."""
    resume: bool = False
    """Skip stages already finished in reports/<run_name>/results.jsonl; resume from checkpoints."""
    keep_checkpoints: bool = False
    """Keep every stage's full checkpoint (weights and optimizer state); by default a finished stage keeps
    only the weights that the pictures pass and `study predict` read, of the last stage."""

    # --- loader and launch settings (toggles set these through configure()) -------------------
    num_workers: int = 0
    """DataLoader worker processes."""
    pin_memory: bool = False
    """Page-locked host batches and non-blocking host-to-device copies."""
    persistent_workers: bool = False
    """Keep DataLoader workers alive across epochs."""
    prefetch_factor: int = 0
    """Batches prefetched per worker (0: DataLoader default)."""
    world_size: int = 1
    """Processes per node for distributed launch (DDP) or hogwild."""
    launcher: str = "local"
    """local | torchrun | hogwild: how the stage process is started."""
    nnodes: int = 1
    """Nodes taking part (passed through to torchrun)."""
    node_rank: int = 0
    """This node's rank (passed through to torchrun)."""
    rdzv_endpoint: str = ""
    """host:port of the rendezvous for multi-node torchrun; empty: standalone."""

    # --- object storage ------------------------------------------------------------------------
    s3_endpoint: str = ""
    """Endpoint URL for S3-compatible stores (else AWS_ENDPOINT_URL or AWS)."""
    s3_cache: str = ""
    """Download objects once into this folder; empty streams every sample from the store."""

    def __post_init__(self) -> None:
        def fix(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        self.check_types()
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}; choose one of: {', '.join(TASKS)}")
        if not self.model:
            fix("model", DEFAULT_MODEL[self.task])
        if not self.dataset:
            fix("dataset", DEFAULT_DATASET[self.task])
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of: {', '.join(MODELS)}")
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; choose one of: {', '.join(DATASETS)}")
        if self.task not in MODEL_TASKS[self.model]:
            fit = [m for m in MODELS if self.task in MODEL_TASKS[m]]
            raise ConfigError(f"model {self.model!r} does not do task {self.task!r}; models for it: {', '.join(fit)}")
        if self.task not in DATASET_TASKS[self.dataset]:
            fit = [d for d in DATASETS if self.task in DATASET_TASKS[d]]
            raise ConfigError(f"dataset {self.dataset!r} has no labels for task {self.task!r}; datasets for it: "
                              f"{', '.join(fit)}")
        for name in ("batch_size", "epochs", "repeats", "world_size", "nnodes", "log_every", "profile_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("image_size", "subset", "val_subset", "steps", "val_steps", "warmup", "threads",
                     "checkpoint_every", "num_workers", "prefetch_factor", "node_rank"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.launcher not in ("local", "torchrun", "hogwild"):
            raise ConfigError(f"unknown launcher {self.launcher!r}")
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
            from study.data.catalog import DEFAULT_SIZE

            fix("epochs", 1)
            fix("steps", min(self.steps or 7, 7))
            if (self.image_size or DEFAULT_SIZE[self.dataset]) > DRY_RUN_MAX_SIDE:
                fix("image_size", DRY_RUN_MAX_SIDE)
            if self.task == "segment":
                fix("batch_size", min(self.batch_size, DRY_RUN_SEGMENT_BATCH))
            fix("val_steps", min(self.val_steps or 2, 2))
            fix("warmup", min(self.warmup, 2))
            fix("subset", min(self.subset or 512, 512))  # DDP ranks split it: 5 measured steps each too
            fix("val_subset", min(self.val_subset or 64, 64))
            fix("profile_steps", min(self.profile_steps, 4))
            if not self.checkpoint_every:
                fix("checkpoint_every", 3)
        if self.steps and self.warmup >= self.steps * self.epochs:
            raise ConfigError(f"--warmup {self.warmup} with --steps {self.steps} x --epochs {self.epochs} leaves no "
                              f"measured step; raise --steps or lower --warmup (warm-up steps are never timed)")

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
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)}; the keys are the long options of "
                              f"`study --help` (batch_size or batch-size for --batch-size)")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def hash(self) -> str:
        """Hash of what changes a measurement (not where outputs go or resume flags)."""
        d = self.to_dict()
        for k in ("run_name", "profiles_root", "reports_root", "resume", "keep_checkpoints", "sanity", "profile", "budget_minutes",
                  "no_pictures", "trace_shapes", "trace_memory", "trace_stack", "trace_budget_mb"):
            d.pop(k, None)
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


def field_docs() -> dict[str, str]:
    """Field docstrings, for --help. Read from the source once; dataclasses keep no docstrings."""
    import ast
    import inspect

    src = inspect.getsource(RunConfig)
    tree = ast.parse(src)
    docs: dict[str, str] = {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = str(b.value.value)  # type: ignore[union-attr]
    return docs


def load_config_file(path: str) -> dict[str, Any]:
    """Read a YAML or TOML file whose keys are CLI options (dashes or underscores)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file must end in .yaml, .yml or .toml: {path}")
    except ConfigError:
        raise
    except Exception as e:  # parser errors carry line numbers; one line is enough
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)  # YAML's error position
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"cannot parse config file {path}{where}: {msg}; fix its syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}
