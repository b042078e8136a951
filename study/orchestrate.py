"""One study from a RunConfig: check the inputs, plan and run the ladder (or the search, then its
ladder), write the reports. The CLI parses; this module runs."""
from __future__ import annotations

import errno
import os
import sys
import tempfile
from pathlib import Path

from study.core.config import DRY_RUN_MAX_SUBSET, ConfigError, RunConfig
from study.core.faults import one_line
from study.core.recorder import Recorder
from study.runner.folder import RunFolderLock, archive_previous, check_resume_identity


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


def check_measured_steps(cfg: RunConfig, train_samples: int, available: int = 0) -> None:
    """Refuse, before any stage starts, a run whose timing pass would measure no step at all.

    ``available``: the training split's size before --subset (0: ``train_samples``). The refusal
    offers only changes that work here: --subset when the split holds more (and, in a dry run, while
    under its cap), --epochs outside a dry run (which trains one epoch), a batch size it computed."""
    available = max(available, train_samples)
    more = available > train_samples and not (cfg.dry_run and train_samples >= DRY_RUN_MAX_SUBSET)
    subset = [f"raise --subset (the split holds {available})"] if more else []
    per_epoch = train_samples // cfg.batch_size  # the training loader drops the last partial batch
    fit = train_samples // (cfg.warmup // cfg.epochs + 1)  # the largest batch that leaves a step to measure
    if per_epoch == 0:
        fixes = [f"lower --batch-size to {fit}" if fit else f"lower --batch-size to {train_samples} and --warmup to 0"]
        fixes += subset
        raise ConfigError(f"{train_samples} training samples make no full batch of {cfg.batch_size}; "
                          f"{' or '.join(fixes)}")
    per_run = min(cfg.steps or per_epoch, per_epoch)
    steps = per_run * cfg.epochs
    if cfg.warmup >= steps:
        fixes = [f"lower --warmup to {steps - 1}"]
        if 1 <= fit < cfg.batch_size and (not cfg.steps or cfg.steps * cfg.epochs > cfg.warmup):
            fixes.append(f"lower --batch-size to {fit}")
        fixes += subset
        if not cfg.dry_run:
            fixes.append(f"raise --epochs to {cfg.warmup // per_run + 1}")
        raise ConfigError(f"the run trains {steps} steps ({train_samples} samples, batch {cfg.batch_size}, "
                          f"{cfg.epochs} epochs{', as every dry run' if cfg.dry_run else ''}) and --warmup "
                          f"{cfg.warmup} excludes them all from timing; {' or '.join(fixes)}")


def record_data_checks(cfg: RunConfig, recorder: Recorder, console) -> None:
    """A check the dataset's reader skipped (a release's MD5s, for a synthetic or UNVERIFIED copy) as a
    "data" row of results.jsonl, which the report's header repeats, and on the console."""
    import time

    from study.data.integrity import skipped_checks
    from study.core.records import StageResult

    skipped = skipped_checks(cfg.data_root, cfg.dataset)
    if skipped:
        recorder.add(StageResult(
            run=cfg.run_name, stage=-1, name="data", kind="data", status="ok", notes={"skipped_checks": skipped},
            started=time.time(), finished=time.time()))
        for line in skipped:
            console.print(f"  data: {line}", markup=False, highlight=False)


def record_verdicts(report_dir: Path, recorder: Recorder) -> None:
    """Each ok stage's findings and advice, decided now that the ladder (and the search) ended, on the
    machine that measured them, into results.jsonl: the report shows what was decided here and then."""
    import time

    from study.advice import verdict_record
    from study.core.records import StageResult
    from study.report.reading import RunData
    from study.report.verdict import decide_verdicts

    run = RunData(report_dir)
    rows = {r.name: r for r in run.ok}
    for name, v in decide_verdicts(run).items():
        r = rows[name]
        recorder.add(StageResult(
            run=r.run, stage=r.stage, name=name, kind="verdict", stack=list(r.stack), status="ok",
            config_hash=r.config_hash, notes={"verdict": verdict_record(v)}, started=time.time(), finished=time.time()))


def run_study(cfg: RunConfig) -> int:
    """Preflight, the sanity check, the ladder, the reports; 0 when every stage is ok or skipped, 3 when
    one failed or the pipeline did not learn one batch. One study at a time per run folder."""
    lock = RunFolderLock(cfg.report_dir)
    try:
        return _run_study(cfg, lock)
    except ConfigError:
        lock.release(refused=True)
        raise
    finally:
        lock.release()


def _run_study(cfg: RunConfig, lock: RunFolderLock) -> int:
    from optimizations.base import parse_stack
    from study.core.machine import Env

    auto = cfg.stack == ("auto",)  # the search picks the stack; its ladder then runs like any other
    if auto and cfg.nnodes > 1:
        raise ConfigError("--stack auto measures its candidates on one node each: to fan the search out over several "
                          "nodes give it --ray-address (a Ray cluster) instead of --nnodes, then run the stack it found "
                          "with --nnodes")
    if cfg.ray_address and not auto:
        raise ConfigError(f"--ray-address fans out the search of --stack auto; --stack {','.join(cfg.stack) or '(none)'} "
                          "has none (a ladder over several nodes: --nnodes)")
    nodes = None
    if auto and cfg.ray_address:  # no Ray, no cluster, unlike nodes: bad input before any stage starts
        from study.search.fanout import RayNodes

        nodes = RayNodes(cfg.ray_address)
    toggles = parse_stack(list(cfg.stack)) if cfg.stack and not auto else []
    _check_writable(cfg.report_dir)
    _check_writable(cfg.profile_dir)
    if cfg.weights and not Path(cfg.weights).is_file():
        raise ConfigError(f"weights file not found: {cfg.weights}")
    env = Env.detect(cfg.device)

    from study.data import open_datasets
    from study.report import build_report, make_console, write_ladder
    from study.runner.ladder import StageRunner

    console = make_console(stderr=True)
    # Preflight in the parent: a missing dataset or unreachable bucket is bad input (exit 2), found
    # before any stage process starts.
    bundle = open_datasets(cfg)
    check_measured_steps(cfg, len(bundle.train), bundle.loads[0].count)
    from study.runner import preflight

    check_resume_identity(cfg)  # --resume into a folder that measured something else
    facts = preflight.run(cfg, bundle)  # samples, model/task/dataset fit, weights, --resume checkpoints
    # The parent keeps only what it reports of the data: it waits idle beside every timed child, and
    # an opened dataset (CIFAR-10's arrays, a file index) is memory the child could use.
    sizes, loads = (len(bundle.train), len(bundle.val)), bundle.loads
    del bundle
    if cfg.node_rank > 0:  # a follower: it joins node 0's multi-node passes and writes no ladder of its own
        from study.runner.multinode import follow

        return follow(cfg, lambda text: console.print(text, markup=False, highlight=False))
    lock.acquire()  # from here on this study writes reports/<run>/
    moved = archive_previous(cfg)  # a rerun: the earlier study's files out of the way, never mixed in
    recorder = Recorder(cfg.report_dir)  # the one writer of results.jsonl; every part of the study hands it rows
    from study.core import sanity
    from study.runner.sanity_check import before_ladder

    checked = None  # does the pipeline learn at all? Seconds on one batch, before the long part
    if cfg.sanity or cfg.dry_run:
        with console.status("sanity check: the baseline's model on one fixed batch"):
            checked = before_ladder(cfg, env, recorder)
        console.print(sanity.line(checked), markup=False, highlight=False)
    if auto:
        from study.search import search_stack

        cfg = search_stack(cfg, env, console, facts, nodes, recorder)  # toggles that cannot take the model are not tried
        toggles = parse_stack(list(cfg.stack)) if cfg.stack else []
    runner = StageRunner(cfg, toggles, env, facts, recorder=recorder)  # plans once (workers=auto measures here)
    # The first open is the cold one (an S3 cache is filled here): keep its 10/11 records too. Written
    # only now that nothing can refuse the run any more.
    from study.core.records import load_seed_rows, seed_rows_to_csv, write_atomic

    write_atomic(cfg.report_dir / "stages" / "_preflight" / "records-r0.csv",
                 seed_rows_to_csv(load_seed_rows(loads)))
    record_data_checks(cfg, recorder, console)
    console.print(f"[bold]study[/] {cfg.run_name}: {cfg.task} {cfg.model} on {cfg.dataset} "
                  f"({sizes[0]} train / {sizes[1]} val), device {env.device_type}, "
                  f"stack: {','.join(cfg.stack) or '(baseline only)'}")
    if moved is not None:
        console.print(f"  the earlier study named {cfg.run_name} moved to {moved}/ (its checkpoints deleted; "
                      f"--resume continues a study instead)", markup=False, highlight=False)

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
        from study.runner.multinode import fleet_of

        runner.fleet = fleet_of(cfg)  # the other nodes, told of each multi-node pass
        try:
            results = runner.run()
        finally:
            runner.fleet.finish()
    record_verdicts(cfg.report_dir, recorder)
    write_ladder(cfg.report_dir)
    build_report([cfg.report_dir])
    console.print(f"reports: {cfg.report_dir}/  traces: tensorboard --logdir {cfg.profile_dir}")
    from study.runner.clean import disk_line

    console.print(disk_line(cfg.report_dir, cfg.profile_dir), markup=False, highlight=False)
    failed = [r for r in results if r.status == "failed"]
    learns = sanity.passed(checked) is not False
    if not failed and learns:
        return 0
    if not learns:
        print(f"study: {sanity.line(checked)}", file=sys.stderr)
    for r in failed:  # plain lines: a script reading stderr gets one line per failed stage
        log = f" (log: {r.notes['log']})" if r.notes.get("log") else ""
        print(f"study: stage {r.name} failed: {one_line(r.error)}{log}", file=sys.stderr)
    if any(r.stage == 0 for r in failed):
        print("study: the baseline failed, so no stage can be compared with it", file=sys.stderr)
    return 3
