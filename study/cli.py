"""Command line: argument parsing only; the work is in stages, report and the data layer."""
from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from study.config import PROFILE_PASSES, ConfigError, RunConfig, field_docs, load_config_file
from study.faults import one_line

COMMANDS = ("run", "list", "report", "predict")

EPILOG = """\
examples:
  python -m study --dry-run                                  baseline only, tiny, whole pipeline
  python -m study --stack workers,pin,script,ddp --dry-run    5 stages: base, +workers, +pin, ...
  python -m study --model resnet18 --stack workers=auto,channels_last,amp=bf16 --repeats 3 --steps 40
  python -m study --task segment --stack workers=2,amp --dry-run
  python -m study --model resnet18 --stack auto --steps 30 --repeats 3   search the best stack, then its ladder
  python -m study list                                       every toggle and whether it applies here
  python -m study report RUN [RUN2]                          rebuild (or compare) reports
  python -m study predict IMG... --checkpoint reports/RUN/checkpoints/STAGE.pt   top-5 + Grad-CAM, or the mask

Outputs: profiles/<run>/<stage>/ (tensorboard --logdir profiles/<run>) and reports/<run>/.
Exit codes: 0 every stage ok or skipped (a toggle that does not apply here); 2 bad input, one line on
  stderr, found before any stage starts; 3 a stage failed (each printed with its error; the reports
  are still written); 130 interrupted (finished stages are kept: add --resume to finish).
"""

# --stack auto profiles its chosen ladder with these unless --profile says otherwise: the verdict reads
# host and compute shares from them.
AUTO_PROFILE = ("cprofile", "torch")

# CLI flag → RunConfig field, for options that map one to one.
_FIELDS = ("task", "model", "dataset", "data_root", "image_size", "subset", "val_subset", "weights",
           "freeze_backbone", "batch_size", "epochs", "steps", "val_steps", "warmup", "lr", "momentum",
           "weight_decay", "seed", "device", "threads", "checkpoint_every", "log_every", "run_name",
           "repeats", "profile_steps", "trace_shapes", "trace_memory", "trace_stack", "trace_budget_mb", "ablate",
           "no_pictures", "budget_minutes", "profiles_root", "reports_root", "dry_run", "resume",
           "nnodes", "node_rank", "rdzv_endpoint", "s3_endpoint", "s3_cache")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        raise ConfigError(message)


def _run_parser() -> argparse.ArgumentParser:
    docs = field_docs()
    types = {f.name: f for f in dataclasses.fields(RunConfig)}
    p = _Parser(prog="study", description="Train a base model, stack optimizations as a ladder of stages, "
                "measure every stage the same honest way, profile it, and report which toggles paid off.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", help="YAML or TOML file with the same options as keys (the CLI wins)")
    p.add_argument("--stack", metavar="T1,T2,...", help="toggles, applied cumulatively, one stage each "
                   "(see `study list`), e.g. workers=4,pin,amp=bf16; or auto: search the toggles that pay off "
                   "here, measured side by side, within --budget-minutes")
    p.add_argument("--profile", metavar="PASSES", help=f"profiling passes after each timing pass: "
                   f"{','.join(PROFILE_PASSES)} or all (dry runs default to all)")
    for name in _FIELDS:
        f = types[name]
        flag = "--" + name.replace("_", "-")
        help_text = docs.get(name, "").replace("%", "%%")  # argparse formats help with %
        if f.type in ("bool", bool):
            p.add_argument(flag, action="store_true", default=None, help=help_text)
        else:
            conv = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, type=conv, default=None, metavar=name.split("_")[-1].upper(),
                           help=f"{help_text} (default: {f.default!r})" if f.default not in ("", None) else help_text)
    return p


def build_config(args: argparse.Namespace) -> RunConfig:
    values: dict[str, Any] = {}
    if args.config:
        values.update(load_config_file(args.config))
    for name in _FIELDS:
        v = getattr(args, name)
        if v is not None:
            values[name] = v
    if args.stack is not None:
        values["stack"] = args.stack
    if args.profile is not None:
        values["profile"] = args.profile
    for key in ("stack", "profile"):
        v = values.get(key)
        if isinstance(v, str):
            values[key] = [s.strip() for s in v.split(",")] if v.strip() else []
    if values.get("profile") == ["all"]:
        values["profile"] = list(PROFILE_PASSES)
    if "profile" not in values and values.get("dry_run"):
        values["profile"] = list(PROFILE_PASSES)
    elif "profile" not in values and values.get("stack") == ["auto"]:
        values["profile"] = list(AUTO_PROFILE)
    try:
        return RunConfig.from_dict(values)
    except TypeError as e:  # wrong value type in a config file
        raise ConfigError(f"bad config value: {e}") from None


def _check_writable(path: Path) -> None:
    """Refuse an output folder that cannot be created and written, creating nothing: a refused run
    leaves no trace (the folders are made when the first stage starts)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is not a folder")
        os.rmdir(tempfile.mkdtemp(prefix=".study-write-test-", dir=existing))
    except OSError as e:
        raise ConfigError(f"cannot write outputs to {path}: {e.strerror or e}; pick another --reports-root/"
                          f"--profiles-root or fix permissions") from None


def check_measured_steps(cfg: RunConfig, train_samples: int) -> None:
    """Refuse, before any stage starts, a run whose timing pass would measure no step at all."""
    per_epoch = train_samples // cfg.batch_size  # the training loader drops the last partial batch
    if per_epoch == 0:
        raise ConfigError(f"{train_samples} training samples make no full batch of {cfg.batch_size}; "
                          f"lower --batch-size or raise --subset")
    steps = min(cfg.steps or per_epoch, per_epoch) * cfg.epochs
    if cfg.warmup >= steps:
        raise ConfigError(f"the run trains {steps} steps ({train_samples} samples, batch {cfg.batch_size}, "
                          f"{cfg.epochs} epochs) and --warmup {cfg.warmup} excludes them all from timing; "
                          f"raise --subset/--epochs or lower --warmup")


def cmd_run(argv: list[str]) -> int:
    args = _run_parser().parse_args(argv)
    cfg = build_config(args)
    try:
        return run_study(cfg)
    except KeyboardInterrupt:  # the running stage's process is stopped by the runner on the way out
        print(f"study: interrupted; finished stages are kept in {cfg.report_dir / 'results.jsonl'}; run the same "
              f"command with --resume to finish the study", file=sys.stderr)
        return 130


def run_study(cfg: RunConfig) -> int:
    """Preflight, the ladder, the reports; 0 when every stage is ok or skipped, 3 when one failed."""
    from optimizations.base import Env, parse_stack

    auto = cfg.stack == ("auto",)  # the search picks the stack; its ladder then runs like any other
    toggles = parse_stack(list(cfg.stack)) if cfg.stack and not auto else []
    _check_writable(cfg.report_dir)
    _check_writable(cfg.profile_dir)
    if cfg.weights and not Path(cfg.weights).is_file():
        raise ConfigError(f"weights file not found: {cfg.weights}")
    env = Env.detect(cfg.device)

    from study.data import open_datasets
    from study.report import build_report, make_console, write_ladder
    from study.stages import StageRunner

    console = make_console(stderr=True)
    # Preflight in the parent: a missing dataset or unreachable bucket is bad input (exit 2), found
    # before any stage process starts.
    bundle = open_datasets(cfg)
    check_measured_steps(cfg, len(bundle.train))
    from study import preflight

    preflight.run(cfg, bundle)  # samples, model/task/dataset fit, weights, --resume checkpoints
    if auto:
        from study.search import search_stack

        cfg = search_stack(cfg, env, console)
        toggles = parse_stack(list(cfg.stack)) if cfg.stack else []
    runner = StageRunner(cfg, toggles, env)  # plans once (workers=auto measures here)
    # The first open is the cold one (an S3 cache is filled here): keep its 10/11 records too. Written
    # only now that nothing can refuse the run any more.
    from study.records import load_seed_rows, seed_rows_to_csv, write_atomic

    write_atomic(cfg.report_dir / "stages" / "_preflight" / "records-r0.csv",
                 seed_rows_to_csv(load_seed_rows(bundle.loads)))
    console.print(f"[bold]study[/] {cfg.run_name}: {cfg.task} {cfg.model} on {cfg.dataset} "
                  f"({len(bundle.train)} train / {len(bundle.val)} val), device {env.device_type}, "
                  f"stack: {','.join(cfg.stack) or '(baseline only)'}")

    def show(r) -> None:
        if r.status == "ok":
            console.print(f"  stage {r.name}: [green]ok[/] {r.throughput:.1f} samples/s, step p50 "
                          f"{r.step_time_p50 * 1000:.1f} ms, data wait {r.data_wait_share * 100:.1f}%, "
                          f"{r.metric_name} {r.metric:.3f}")
        elif r.status == "skipped":
            console.print(f"  stage {r.name}: [yellow]skipped[/] — {r.reason}")
        else:
            from rich.markup import escape  # errors hold brackets: "[Errno 104]", "[gloo]"

            console.print(f"  stage {r.name}: [red]failed[/] — {escape(one_line(r.error))}")

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    # No auto-refresh thread: the display is redrawn only when the runner reports something (at most
    # every couple of seconds while a child is timed), so the parent stays idle on a small machine.
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} stages"),
                  TimeElapsedColumn(), console=console, transient=True, auto_refresh=False) as progress:
        bar = progress.add_task("starting", total=len(runner.stages))

        def result(r) -> None:
            show(r)
            progress.advance(bar)
            progress.refresh()

        def on_pass(what: str) -> None:
            progress.update(bar, description=what)
            progress.refresh()

        runner.on_result = result
        runner.on_pass = on_pass
        runner.on_warning = lambda text: console.print(f"[yellow]warning:[/] {text}")
        results = runner.run()
    write_ladder(cfg.report_dir)
    build_report([cfg.report_dir])
    console.print(f"reports: {cfg.report_dir}/  traces: tensorboard --logdir {cfg.profile_dir}")
    failed = [r for r in results if r.status == "failed"]
    if not failed:
        return 0
    for r in failed:  # plain lines: a script reading stderr gets one line per failed stage
        print(f"study: stage {r.name} failed: {one_line(r.error)}", file=sys.stderr)
    if any(r.stage == 0 for r in failed):
        print("study: the baseline failed, so no stage can be compared with it", file=sys.stderr)
    return 3


def cmd_list(argv: list[str]) -> int:
    p = _Parser(prog="study list", description="Every registered toggle, its values and whether it applies here.")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    from rich.table import Table

    from optimizations.base import Env, load_all
    from study.report import make_console

    env = Env.detect(args.device)
    table = Table(title=f"toggles (this machine: {env.device_type}, {env.cuda_count} GPU, {env.cpu_count} CPU cores)")
    for c in ("toggle", "values", "applies here", "conflicts", "description"):
        table.add_column(c, overflow="fold")
    for name, cls in sorted(load_all().items()):
        ok, reason = cls(None).applicable(env)  # every toggle has a default value
        table.add_row(name, cls.value_help or "–", "yes" if ok else f"no: {reason}",
                      ", ".join(cls.conflicts) or "–", cls.description)
    make_console().print(table)
    return 0


def cmd_report(argv: list[str]) -> int:
    p = _Parser(prog="study report", description="Rebuild tables and plots of one run, or compare runs side by side.")
    p.add_argument("runs", nargs="+", help="run names (under --reports-root) or paths to reports/<run>")
    p.add_argument("--reports-root", default="reports")
    args = p.parse_args(argv)
    dirs = []
    for r in args.runs:
        d = Path(r) if Path(r).is_dir() else Path(args.reports_root) / r
        if not (d / "results.jsonl").is_file():
            raise ConfigError(f"no results.jsonl in {d}; run a study first or give the path to reports/<run>")
        dirs.append(d)
    from study.report import build_report, write_ladder

    for d in dirs:
        write_ladder(d)
    build_report(dirs)
    return 0


def cmd_predict(argv: list[str]) -> int:
    p = _Parser(prog="study predict", description="Try a study checkpoint on pictures: the top-5 classes and a "
                "Grad-CAM overlay (classification), or the predicted mask and each class's pixel share "
                "(segmentation). The checkpoint says which model, classes, input size and normalisation.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="picture files (any format PIL reads)")
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="reports/<run>/checkpoints/<stage>.pt")
    p.add_argument("--out", default="predictions", metavar="DIR", help="where the overlay PNGs go (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    args = p.parse_args(argv)
    from study.predict import check_inputs, predict

    paths, _ = check_inputs(args.images, args.checkpoint)  # torch-free: bad input fails in milliseconds
    predict(paths, Path(args.checkpoint), Path(args.out), device=args.device)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = "run"
    if argv and argv[0] in COMMANDS:
        cmd = argv.pop(0)
    try:
        return {"run": cmd_run, "list": cmd_list, "report": cmd_report, "predict": cmd_predict}[cmd](argv)
    except ConfigError as e:
        print(f"study: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("study: interrupted; finished stages are in results.jsonl (use --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
