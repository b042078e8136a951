"""Plan the ladder of stages from a stack and run each stage in fresh child processes.

Stage 0 is the baseline; stage k is the baseline plus the first k applicable toggles. A toggle that
is not applicable here (pin without an accelerator, dp with < 2 GPUs) or cannot apply to the model
(channels_last on token ids; the preflight's facts) gives a `skipped` stage with the reason and is
left out of later stages. A stage whose process fails is recorded as `failed` with
its real error, its toggle is left out of the later stages (planned again without it), and the ladder
goes on.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from optimizations.base import Optimization, configure_all
from study.core.machine import Env
from study.models.facts import ModelFacts
from study.core.config import RunConfig
from study.core.child_process import run_child
from study.runner.live_scalars import LiveScalars
from study.runner.multinode import OneNode
from study.core.machine_load import busy_retries, describe, is_busy
from study.runner.clean import prune_checkpoints, weights_stage
from study.core.recorder import Recorder
from study.core.records import StageResult, aggregate, git_sha, versions, write_atomic
from study.core.stage_spec import StageSpec, worker_command


EVENTS = "events.out.tfevents.*"  # TensorBoard's event files


@dataclass
class PlannedStage:
    spec: StageSpec
    skip_reason: str = ""

    @property
    def cfg(self) -> RunConfig:
        return self.spec.config


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "stage"


def planned(cfg: RunConfig, env: Env, index: int, name: str, active: list[Optimization],
            skip: str = "") -> PlannedStage:
    stack = tuple(t.spec for t in active)
    scfg = cfg.replace(stack=stack)
    spec = StageSpec(index=index, name=name, stack=stack, config=scfg, plan=configure_all(scfg, active, env))
    return PlannedStage(spec=spec, skip_reason=skip)


def plan(cfg: RunConfig, toggles: list[Optimization], env: Env, model: ModelFacts | None = None,
         failed: frozenset[int] = frozenset()) -> list[PlannedStage]:
    """The ladder's stages; `failed` holds the indices of stages that failed, whose toggles later stages leave out."""
    stages = [planned(cfg, env, 0, "00-base", [])]
    active: list[Optimization] = []
    for i, t in enumerate(toggles, 1):
        ok, reason = t.applicable(env)
        if ok and model is not None:
            ok, reason = t.fits(model)
            reason = f"does not apply to this model: {reason}" if not ok else ""
        name = f"{i:02d}-{slug(t.spec)}"
        if not ok:
            stages.append(planned(cfg, env, i, name, active, skip=reason or "not applicable here"))
            continue
        stages.append(planned(cfg, env, i, name, [*active, t]))
        if i not in failed:
            active.append(t)
    if cfg.ablate and len(active) > 1:
        # Leave-one-out on the full stack: each toggle's contribution in the company of the others.
        for j, t in enumerate(active):
            rest = active[:j] + active[j + 1:]
            stages.append(planned(cfg, env, len(toggles) + 1 + j, f"ablate-no-{slug(t.spec)}", rest))
    return stages


# A dry run is meant to show the whole pipeline in minutes; a pass whose first steps predict more
# than this is announced at once, so the user can stop it and shrink the run.
DRY_RUN_PASS_BUDGET_S = 300.0


def short_duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class StageRunner:
    def __init__(self, cfg: RunConfig, toggles: list[Optimization], env: Env, model: ModelFacts | None = None,
                 on_result: Callable[[StageResult], None] | None = None,
                 on_pass: Callable[[str], None] | None = None, recorder: Recorder | None = None) -> None:
        self.cfg, self.toggles, self.env = cfg, toggles, env
        self.recorder = recorder or Recorder(cfg.report_dir)  # the study's one writer of results.jsonl
        self.on_result = on_result or (lambda r: None)
        self.on_pass = on_pass or (lambda what: None)  # progress display: "01-workers timing r0"
        self.on_warning: Callable[[str], None] = lambda text: None  # one line for the user, now
        self.fleet: OneNode = OneNode()  # the other nodes of a multi-node study (study.runner.multinode), set by the study
        self.model = model
        self.failed: frozenset[int] = frozenset()  # ladder stages that failed: their toggles are left out after them
        self.stages = plan(cfg, toggles, env, model)  # configure() may measure (workers=auto), once per study

    def step_reporter(self, what: str, live: LiveScalars | None = None) -> Callable[[int, int, float, float], None]:
        """Progress text for a pass: steps done and the time left, estimated from the steps so far
        (process start and warm-up included, so the first estimates err on the long side); with `live`,
        the last step's loss and speed to TensorBoard as well."""
        t0, warned = time.monotonic(), [False]

        def on_steps(done: int, total: int, loss: float = math.nan, samples_per_s: float = math.nan) -> None:
            if live is not None:
                live.add(done, loss, samples_per_s)
            elapsed = time.monotonic() - t0
            left = elapsed / done * (total - done) if done else 0.0
            self.on_pass(f"{what}, step {done}/{total}, ~{short_duration(left)} left")
            if self.cfg.dry_run and not warned[0] and elapsed + left > DRY_RUN_PASS_BUDGET_S:
                warned[0] = True
                self.on_warning(f"{what}: {done} steps took {short_duration(elapsed)}; this pass will take "
                                f"about {short_duration(elapsed + left)}, more than a dry run should. Stop with "
                                f"Ctrl-C and use a smaller --image-size, --batch-size or --model, or let it run.")
        return on_steps

    def finished(self) -> tuple[dict[str, StageResult], dict[tuple[str, int], StageResult]]:
        """What an interrupted study of this run already measured (for --resume): its finished stages,
        and the timing runs of the stages it had not finished, by (stage, repeat): the kept attempt."""
        stages, runs = {}, {}
        for r in self.recorder.rows():
            if r.kind == "stage" and r.status in ("ok", "skipped"):
                stages[r.name] = r
            elif r.kind == "repeat" and r.status == "ok":
                kept = runs.get((r.name, r.repeat))
                if kept is None or kept.config_hash != r.config_hash or r.foreign_cpu_share < kept.foreign_cpu_share:
                    runs[(r.name, r.repeat)] = r
        return stages, runs

    def run(self) -> list[StageResult]:
        """The ladder in rounds: round r times repeat r of every stage (in ladder order, backwards in odd
        rounds), so whatever changes on the machine over the study falls on every stage alike, and
        stage k's run r pairs with the baseline's run r. A stage whose first run fails is closed there, and the stages after it are
        planned again without its toggle; every other stage is closed (aggregated, then profiled) after
        the last round."""
        cfg, stages = self.cfg, self.stages
        cfg.report_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(cfg.report_dir / "config.json", json.dumps(
            {"config": cfg.to_dict(), "stages": [s.spec.to_dict() for s in stages],
             "env": self.env.to_dict()}, indent=2, sort_keys=True, default=str))
        # The machine and the options as this run saw them, in results.jsonl itself: the report reads
        # them from here, never from the machine that renders it.
        self.recorder.add(StageResult(
            run=cfg.run_name, stage=-1, name="run", kind="run", status="ok", versions=versions(), git_sha=git_sha(),
            notes={"env": self.env.to_dict(), "config": cfg.to_dict(), "stages": [s.spec.name for s in stages]},
            started=time.time(), finished=time.time()))
        done, measured = self.finished() if cfg.resume else ({}, {})
        closed: dict[str, StageResult] = {}
        runs: dict[str, list[StageResult]] = {}
        for r in range(cfg.repeats):
            i = 0
            while i < len(self.stages):  # planned again, without a toggle whose stage failed, from there on
                # odd rounds run backwards (A B C, C B A, ...): drift within a round falls on every stage
                # alike instead of on the last ones; round 0 goes in ladder order, where failures drop toggles
                st = self.stages[len(self.stages) - 1 - i if r % 2 else i]
                i += 1
                name = st.spec.name
                if name in closed:
                    continue
                prev = done.get(name)
                if prev is not None and prev.config_hash == st.spec.hash():
                    self.close(st, prev, closed)
                    continue
                if st.skip_reason:
                    self.close(st, self.skipped_row(st), closed)
                    continue
                kept = measured.get((name, r))
                row = kept if kept is not None and kept.config_hash == st.spec.hash() else self.timed_run(st, r)
                runs.setdefault(name, []).append(row)
                if row.status == "failed":  # the same config would fail again: record it once and move on
                    self.close(st, self.stage_row(st, runs[name]), closed)
                    if r == 0 and 1 <= st.spec.index <= len(self.toggles):
                        self.leave_out(st.spec.index)
        for st in self.stages:  # the profiling passes come after every timing run of every stage
            if st.spec.name not in closed:
                self.close(st, self.stage_row(st, runs[st.spec.name]), closed)
        results = [closed[st.spec.name] for st in self.stages]
        self.run_pictures(results)
        return results

    def close(self, st: PlannedStage, row: StageResult, closed: dict[str, StageResult]) -> None:
        closed[st.spec.name] = row
        if not self.cfg.keep_checkpoints:  # finished stages keep one stage's weights in all (study.runner.clean)
            in_order = [closed[s.spec.name] for s in self.stages if s.spec.name in closed]
            prune_checkpoints([s.spec for s in self.stages if s.spec.name in closed], len(self.toggles), in_order)
        self.on_result(row)

    def leave_out(self, i: int) -> None:
        """Stage i failed at run time: its toggle would fail every later stage the same way, so the
        stages after it are planned again without it (the failed stage keeps its row and its error)."""
        self.failed |= {i}
        self.stages = plan(self.cfg, self.toggles, self.env, self.model, self.failed)
        if i < len(self.toggles):
            self.on_warning(f"{self.toggles[i - 1].spec} failed in {self.stages[i].spec.name}: the later stages "
                            f"leave it out")

    def run_pictures(self, results: list[StageResult]) -> None:
        """Pictures of the trained model of the last ladder stage that finished ok, drawn in a fresh
        process of its own, as every pass; reports/<run>/pictures.json holds them or the error."""
        from dataclasses import replace

        from study.pictures import PASS_NAME, PICTURES_FILE

        target = self.cfg.report_dir / PICTURES_FILE
        # the stage whose weights the run keeps (study.runner.clean): the last ok ladder stage, no ablation
        spec = None if self.cfg.no_pictures else weights_stage([st.spec for st in self.stages], len(self.toggles),
                                                               results)
        if spec is None:
            target.unlink(missing_ok=True)  # never show an earlier run's pictures as this one's
            return
        from study.core.config import is_reference

        plugin = [f"--{k} {getattr(self.cfg, k)}" for k in ("task", "dataset") if is_reference(getattr(self.cfg, k))]
        if plugin:  # confusion matrix, Grad-CAM and overlays read images of the built-in tasks' kinds
            write_atomic(target, json.dumps({"stage": spec.name, "skipped": f"the pictures know the built-in tasks "
                                             f"and datasets only, and this run has {' and '.join(plugin)}"}))
            return
        self.on_pass(f"{spec.name}: pictures")
        rep_dir = spec.report_dir
        stage_file, out = rep_dir / "stage.json", rep_dir / f"{PASS_NAME}.json"
        spec.save(stage_file)
        # One plain process even for a DDP stage: the pass only reads the checkpoint and the val set.
        local = replace(spec, plan=spec.plan.replace(launcher="local"))
        payload, err = run_child(worker_command(local, stage_file, PASS_NAME, 0, out), rep_dir / f"{PASS_NAME}.log", out)
        if payload is None:
            self.on_warning(f"pictures of {spec.name} failed: {err[:300]}")
            payload = {"stage": spec.name, "error": err}
        write_atomic(target, json.dumps(payload, indent=2))

    def skipped_row(self, st: PlannedStage) -> StageResult:
        row = StageResult(status="skipped", reason=st.skip_reason, versions=versions(), started=time.time(),
                          finished=time.time(), **st.spec.identity(), git_sha=git_sha())
        self.recorder.add(row)
        return row

    def stage_row(self, st: PlannedStage, runs: list[StageResult]) -> StageResult:
        """The stage's row from its timing runs (in round order), then its profiling passes."""
        agg = aggregate(runs)
        if agg.status == "ok":
            agg.profiles = self.run_profiles(st, self.stage_file(st), st.spec.report_dir)
        self.recorder.add(agg)
        self.merge_records()
        return agg

    def stage_file(self, st: PlannedStage) -> Path:
        st.spec.report_dir.mkdir(parents=True, exist_ok=True)
        path = st.spec.report_dir / "stage.json"
        st.spec.save(path)
        return path

    def run_pass(self, spec: StageSpec, stage_file: Path, pass_name: str, repeat: int, out: Path, log: Path,
                 cmd: list[str] | None = None, **watch) -> tuple[dict | None, str]:
        """One pass in its child process; a pass that spans nodes is posted to the followers first, and
        when it fails, what they said of it joins the error."""
        slot = self.fleet.announce(spec, pass_name, repeat) if spec.plan.launcher == "torchrun" else None
        payload, err = run_child(cmd or worker_command(spec, stage_file, pass_name, repeat, out), log, out, **watch)
        if payload is None and slot is not None:
            err = "; ".join(e for e in (err, self.fleet.follower_errors(slot)) if e)
        return payload, err

    def timed_run(self, st: PlannedStage, r: int) -> StageResult:
        """Repeat r of a stage's timing. A run during which others used much of the machine is run
        again (at most --busy-retries times; never in a dry run, which checks the pipeline and measures
        nothing that matters); every attempt is a row, and the stage keeps the quietest."""
        cfg, rep_dir, stage_file = st.cfg, st.spec.report_dir, self.stage_file(st)
        common = st.spec.identity() | dict(git_sha=git_sha())
        attempts: list[StageResult] = []
        curves: list[set[Path]] = []  # each attempt's TensorBoard files (the child writes the first run's)
        tries = 1 + (0 if cfg.dry_run else busy_retries(cfg.busy_retries))
        for attempt in range(tries):
            before = set(st.spec.profile_dir.glob(EVENTS))
            tag = f"r{r}" if attempt == 0 else f"r{r}-again{attempt}"
            what = f"{st.spec.name}: timing {r + 1}/{cfg.repeats}" + (", again (busy machine)" if attempt else "")
            self.on_pass(what)
            out = rep_dir / f"timing-{tag}.json"
            # the live curve of the stage's first timing run, as its train/ scalars are the first run's
            live = LiveScalars(st.spec.profile_dir) if r == 0 and attempt == 0 else None
            try:
                payload, err = self.run_pass(st.spec, stage_file, "timing", r, out, rep_dir / f"timing-{tag}.log",
                                             on_steps=self.step_reporter(what, live), record_load=True)
            finally:
                if live is not None:
                    live.close()
            if payload is None:  # the log holds the whole traceback: the row says where it is
                row = StageResult(status="failed", error=err, kind="repeat", repeat=r, repeats=cfg.repeats,
                                  notes={"log": str(rep_dir / f"timing-{tag}.log")}, versions=versions(),
                                  started=time.time(), finished=time.time(), **common)
            else:
                row = StageResult.from_dict(payload)
                row.git_sha = common["git_sha"]
                row.notes = {**row.notes, "attempt": attempt} if attempt else row.notes
            self.recorder.add(row)
            attempts.append(row)
            curves.append(set(st.spec.profile_dir.glob(EVENTS)) - before)
            records = rep_dir / f"records-r{r}.csv"
            if records.is_file():  # each attempt's seed records apart; the kept one's become records-rN.csv
                os.replace(records, rep_dir / f"attempt{attempt}-records-r{r}.csv")
            if row.status != "ok" or not is_busy(row.foreign_cpu_share):
                break
            self.on_warning(f"{st.spec.name} timing {r + 1}: {describe(row.foreign_cpu_share)}; " +
                            ("measuring it again" if attempt + 1 < tries else
                             f"still busy after {tries} runs, keeping the quietest (the report flags it)" if tries > 1
                             else "not measured again (--busy-retries 0, or a dry run); the report flags it"))
        kept = min(range(len(attempts)), key=lambda a: (attempts[a].status != "ok", attempts[a].foreign_cpu_share))
        self.keep_attempt(st, r, kept, curves)
        return attempts[kept]

    def keep_attempt(self, st: PlannedStage, r: int, kept: int, curves: list[set[Path]]) -> None:
        """The kept attempt's seed records and curves are the stage's, as its row is: the others' move
        aside (TensorBoard would draw them as the stage's own), kept for a reader who asks."""
        rep_dir, aside = st.spec.report_dir, st.spec.profile_dir / "busy-attempts"
        chosen = rep_dir / f"attempt{kept}-records-r{r}.csv"
        if chosen.is_file():
            shutil.copyfile(chosen, rep_dir / f"records-r{r}.csv")
        for attempt, files in enumerate(curves):
            for f in files if attempt != kept else ():
                (aside / f"r{r}-attempt{attempt}").mkdir(parents=True, exist_ok=True)
                os.replace(f, aside / f"r{r}-attempt{attempt}" / f.name)

    def run_profiles(self, st: PlannedStage, stage_file: Path, rep_dir: Path) -> dict[str, str]:
        """Each profiling pass is its own short run, so its overhead never enters the timing."""
        paths: dict[str, str] = {}
        for name in self.cfg.profile:
            self.on_pass(f"{st.spec.name}: {name} profile")
            out = rep_dir / f"{name}.json"
            cmd = worker_command(st.spec, stage_file, name, 0, out)
            if name == "pyspy":
                from study.profiling.pyspy import wrap_command

                cmd = wrap_command(cmd, self.cfg.profile_dir / st.spec.name)
            payload, err = self.run_pass(st.spec, stage_file, name, 0, out, rep_dir / f"{name}.log", cmd=cmd)
            if payload is None:
                paths[f"{name}_error"] = err
            else:
                paths.update(payload.get("profiles", {}))
        return paths

    def merge_records(self) -> None:
        """reports/<run>/records.csv: every stage's seed records; seed columns first, then stage, repeat."""
        import csv
        import io

        from study.core.records import SEED_COLUMNS

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(SEED_COLUMNS + ("stage", "repeat"))
        stages_dir = self.cfg.report_dir / "stages"
        for stage_dir in sorted(p for p in stages_dir.glob("*") if p.is_dir()):
            for part in sorted(stage_dir.glob("records-r*.csv")):
                repeat = part.stem.split("-r")[-1]
                with open(part, newline="") as fh:
                    reader = csv.reader(fh)
                    next(reader, None)
                    for row in reader:
                        w.writerow(row + [stage_dir.name, repeat])
        write_atomic(self.cfg.report_dir / "records.csv", buf.getvalue())
