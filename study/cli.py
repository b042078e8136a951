"""Command line: argument parsing only; a study runs in study.orchestrate, reports in study.report."""
from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import sys
from pathlib import Path
from typing import Any

from study.core.config import PROFILE_PASSES, SECTIONS, ConfigError, RunConfig, flatten_sections
from study.core.config_files import field_docs, load_config_file
from study.core.stage_plan import PLAN_FIELDS

COMMANDS = ("run", "list", "report", "predict", "clean")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

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
  python -m study clean RUN                                  remove the run's checkpoints, keep results and traces

Outputs: profiles/<run>/<stage>/ (tensorboard --logdir profiles/<run>) and reports/<run>/.
Exit codes: 0 every stage ok or skipped (a toggle that does not apply here); 2 bad input, one line on
  stderr, found before any stage starts; 3 a stage failed (each printed with its error; the reports
  are still written), or the sanity check found the pipeline does not learn one batch; 130
  interrupted (finished stages are kept: add --resume to finish).
"""

# --stack auto profiles its chosen ladder with these unless --profile says otherwise: the verdict reads
# host and compute shares from them.
AUTO_PROFILE = ("cprofile", "torch")

# Options whose flag takes a list in its own syntax; every other RunConfig field maps one to one.
LIST_OPTIONS = {
    "stack": ("T1,T2,...", "toggles, applied cumulatively, one stage each (see `study list`), e.g. "
              "workers=4,pin,amp=bf16; or auto: search the toggles that pay off here, measured side by side, "
              "within --budget-minutes"),
    "profile": ("PASSES", f"profiling passes after each timing pass: {','.join(PROFILE_PASSES)} or all "
                "(dry runs default to all)"),
}
FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name not in LIST_OPTIONS)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        raise ConfigError(message)


def run_parser() -> argparse.ArgumentParser:
    docs = field_docs()
    p = _Parser(prog="study", description="Train a base model, stack optimizations as a ladder of stages, "
                "measure every stage the same honest way, profile it, and report which toggles paid off.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", help="YAML or TOML file with the same options as keys, flat or "
                   "under their section's name (the CLI wins)")
    for section, cls in SECTIONS.items():
        group = p.add_argument_group(f"{section} options")
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            if f.name in LIST_OPTIONS:
                metavar, help_text = LIST_OPTIONS[f.name]
                group.add_argument(flag, metavar=metavar, help=help_text.replace("%", "%%"))
                continue
            help_text = docs.get(f.name, "").replace("%", "%%")  # argparse formats help with %
            if f.type in ("bool", bool):
                group.add_argument(flag, action="store_true", default=None, help=help_text)
            else:
                conv = {"int": int, "float": float}.get(str(f.type), str)
                group.add_argument(flag, type=conv, default=None, metavar=f.name.split("_")[-1].upper(),
                                   help=f"{help_text} (default: {f.default!r})" if f.default not in ("", None)
                                   else help_text)
    return p


def refuse_plan_fields(values: dict[str, Any]) -> None:
    """A config file that sets what a toggle decides (num_workers: 4) would silently change the baseline:
    refuse it, naming the toggle that sets it."""
    from optimizations.base import setter_of

    nested = [str(k).replace("-", "_") for v in values.values() if isinstance(v, dict) for k in v]
    for key in [*values, *nested]:
        if key in PLAN_FIELDS:
            toggle = setter_of(key)
            how = f"the {toggle} toggle sets it (--stack {toggle}{'=N' if key in ('num_workers', 'world_size') else ''})" \
                if toggle else "the stage's toggles set it"
            raise ConfigError(f"config key {key} is not an option: {how}, so the baseline stays the plain loop; "
                              f"remove it from the config file")


def build_config(args: argparse.Namespace) -> RunConfig:
    values: dict[str, Any] = {}
    if args.config:
        values.update(load_config_file(args.config))
        refuse_plan_fields(values)
        values = flatten_sections(values)
    for name in FIELDS:
        v = getattr(args, name)
        if v is not None:
            values[name] = v
    for key in LIST_OPTIONS:
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    from study.runner.multinode import slurm_launch

    for key, value in slurm_launch(dict(os.environ)).items():  # under srun; flags and config files win
        values.setdefault(key, value)
    for key in LIST_OPTIONS:
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


def cmd_run(argv: list[str]) -> int:
    args = run_parser().parse_args(argv)
    cfg = build_config(args)
    from study.orchestrate import run_study

    try:
        return run_study(cfg)
    except KeyboardInterrupt:  # the running stage's process is stopped by the runner on the way out
        print(f"study: interrupted; finished stages are kept in {cfg.report_dir / 'results.jsonl'}; run the same "
              f"command with --resume to finish the study", file=sys.stderr)
        return 130


def cmd_list(argv: list[str]) -> int:
    p = _Parser(prog="study list", description="Every registered toggle, its values and whether it applies here.")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    from rich.table import Table

    from optimizations.base import conflicts_of, load_all
    from study.core.machine import Env
    from study.report import make_console

    env = Env.detect(args.device)
    table = Table(title=f"toggles (this machine: {env.device_type}, {env.cuda_count} GPU, {env.cpu_count} CPU cores)")
    for c in ("toggle", "values", "applies here", "conflicts", "description"):
        table.add_column(c, overflow="fold")
    for name, cls in sorted(load_all().items()):
        toggle = cls(None)  # every toggle has a default value
        ok, reason = toggle.applicable(env)
        caveat = toggle.caveat(env) if ok else ""
        table.add_row(name, cls.value_help or "–", (f"yes, but {caveat}" if caveat else "yes") if ok else f"no: {reason}",
                      ", ".join(conflicts_of(name)) or "–", cls.description)
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
        from study.core.records import read_results

        if not any(r.kind == "stage" for r in read_results(d / "results.jsonl")):
            raise ConfigError(f"{d / 'results.jsonl'} holds no finished stage; run the study (again) first, with "
                              f"--resume to keep what it has")
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

    paths, _ = check_inputs(args.images, args.checkpoint, args.out)  # torch-free: bad input fails in milliseconds
    predict(paths, Path(args.checkpoint), Path(args.out), device=args.device)
    return 0


def cmd_clean(argv: list[str]) -> int:
    p = _Parser(prog="study clean", description="Remove the checkpoints of runs (the bulk of what a run leaves) and "
                "keep results.jsonl, the reports and the traces.")
    p.add_argument("runs", nargs="+", help="run names (under --reports-root) or paths to reports/<run>")
    p.add_argument("--reports-root", default="reports")
    args = p.parse_args(argv)
    from study.runner.clean import clean, run_dir

    dirs = [run_dir(r, args.reports_root) for r in args.runs]  # every name checked before anything is removed
    for d in dirs:
        print(f"study clean: {clean(d)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = "run"
    if argv and argv[0] in COMMANDS:
        cmd = argv.pop(0)
    try:
        return {"run": cmd_run, "list": cmd_list, "report": cmd_report, "predict": cmd_predict,
                "clean": cmd_clean}[cmd](argv)
    except ConfigError as e:
        print(f"study: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("study: interrupted; finished stages are in results.jsonl (use --resume)", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        print(f"study: error: the disk is full ({e.strerror}) writing {e.filename or 'an output'}; what was written "
              f"before is whole. Free space (python -m study clean RUN removes a run's checkpoints) and continue "
              f"with --resume", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
