"""The sections of one run's report, in order: each is a function RunData -> Part.

A new section is one more function in RUN_SECTIONS (a verdict first, pictures anywhere); a new
per-stage block under "Profiles per stage" is one more function in STAGE_PROFILE_PARTS. Sections
that draw write their PNG beside summary.md. Plots are imported inside the sections that draw, so
importing the report (the CLI does, for its console) does not import matplotlib.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from study.profiling.trace_summary import CATEGORIES, diff_ops, headline
from study.core.records import StageResult
from study.core import fmt
from study.report.doc import Doc, Part, rel
from study.report.frames import (PHASE_FIELDS, UNREPRESENTATIVE, category_frame, cprofile_frame, diff_frames,
                                 diff_pairs, lines_frame, mfu_frame, phase_frame, profile_ratio, quality_frame,
                                 top_ops_frame)
from study.report.ladder import display_frame, ladder_frame, ladder_text
from study.report import learning
from study.report.reading import RunData
from study.report.compile_stats import compile_stats
from study.report.verdict import bottlenecks, search_table, verdict

Section = Callable[[RunData], Part]


def header(run: RunData) -> Part:
    part = Part()
    if run.stages:
        first = run.stages[0]
        part.para(f"{first.task} · model {first.model} · data {first.dataset} · batch {first.batch_size}/process · "
                  f"device {first.device_name or first.device or '?'} · torch {first.versions.get('torch', '?')} · "
                  f"git {first.git_sha or '?'}. Every figure below comes from results.jsonl or a profile file "
                  f"of this run.")
    checks = [c for r in run.results if r.kind == "data" for c in r.notes.get("skipped_checks", [])]
    if checks:  # the dataset was read without a check its release has (synthetic, or accepted UNVERIFIED)
        part.para("Data: " + "; ".join(dict.fromkeys(checks)) + ".")
    if run.skipped:
        part.para(f"results.jsonl has {len(run.skipped)} line(s) that hold no row, left out of every figure: "
                  + "; ".join(run.skipped[:3]) + ("; …" if len(run.skipped) > 3 else ""))
    return part


def ladder(run: RunData) -> Part:
    from study.report import plots

    part, rows = Part(), run.stages
    df = ladder_frame(run.results)
    part.heading("Ladder")
    part.table(display_frame(df) if len(df) else df)
    summary_line = ladder_text(df) if len(df) else ""
    if summary_line:
        part.para(summary_line)
    ok = [r.status == "ok" for r in rows]
    part.image(plots.throughput([r.name for r in rows], [r.throughput if o else None for r, o in zip(rows, ok)],
                                [r.throughput_ci_low if o else None for r, o in zip(rows, ok)],
                                [r.throughput_ci_high if o else None for r, o in zip(rows, ok)],
                                run.dir / "throughput.png", f"{run.name}: throughput per stage",
                                missing=[r.status for r in rows]),
               "throughput per stage with 95% CI")
    return part


def phases(run: RunData) -> Part:
    from study.report import plots

    part, ok = Part(), run.ok
    part.heading("Where a step's time goes (timing pass)")
    part.para("Mean milliseconds per measured step in each phase of the one training loop (warm-up excluded). "
              "Data wait is time blocked in next(loader): the figure workers/pin should shrink.")
    frame = phase_frame(run.stages)
    part.table(frame)
    part.image(plots.stacked([r.name for r in ok], {ph: [getattr(r, f) * 1000 for r in ok] for ph, f in PHASE_FIELDS},
                             run.dir / "phases.png", f"{run.name}: phase breakdown"),
               "phase breakdown per stage")
    if len(frame):  # the console shows phases and MFU in one table: where time goes, and how well it is used
        shown = frame[["stage", *(f"{ph} ms" for ph, _ in PHASE_FIELDS), "step ms"]]
        mfu = mfu_frame(run.stages)
        if len(mfu):
            shown = shown.merge(mfu[["stage", "MFU %"]], on="stage", how="left")
        part.show_table(f"{run.name}: phases (timing pass) and MFU", shown)
    return part


def mfu(run: RunData) -> Part:
    part = Part()
    part.heading("Model FLOPs utilization")
    part.para("FLOPs per sample counted once per stage (FlopCounterMode, forward + backward) × throughput ÷ the "
              "devices' peak. CPU peaks are estimates from cores × clock × FLOPs/cycle.")
    part.table(mfu_frame(run.stages))
    return part


def quality(run: RunData) -> Part:
    from study.report import plots

    part = Part()
    part.heading("Quality")
    part.table(quality_frame(run.stages))
    for text in learning.notes(run):  # what these figures can and cannot say (a dry run's 7 steps)
        part.para(text)
    part.image(plots.curves({r.name: run.losses(r) for r in run.ok}, run.dir / "curves.png",
                            f"{run.name}: training loss (repeat 0)"),
               "training loss per step")
    return part


def worker_sweep(run: RunData) -> Part:
    from study.report import plots

    part, sweep = Part(), run.worker_sweep()
    if sweep:
        part.heading("DataLoader worker sweep")
        part.para("workers=auto: samples/s of the training loader alone for each worker count (start-up batches "
                  "not timed); the smallest count within 10 % of the best is chosen.")
        part.table([{"workers": s["workers"], "samples/s": fmt.num(s["samples_per_s"], ".1f"),
                     "start-up s": fmt.num(s.get("startup_seconds"), ".2f"), "chosen": "✓" if s["chosen"] else ""}
                    for s in sweep])
        part.image(plots.worker_sweep([s["workers"] for s in sweep], [s["samples_per_s"] for s in sweep],
                                      run.dir / "worker_sweep.png", f"{run.name}: worker sweep"),
                   "samples/s per number of workers")
    return part


def batch_sweep(run: RunData) -> Part:
    """batch=auto's table as the first stage with it recorded it in its notes (results.jsonl alone)."""
    part = Part()
    stage = next((r for r in run.stages if isinstance(r.notes.get("batch_sweep"), list)), None)
    if stage is None:
        return part
    chosen = stage.notes.get("batch_sweep_chosen")
    part.heading("Batch-size sweep")
    part.para("batch=auto: samples/s by median step of each size that fit, timed side by side in turned rounds; "
              "a size that ran out of memory (or over the CPU budget) was dropped and no larger one tried.")
    part.table([{"batch/process": f"{r.get('batch')} ×{r['accumulate']}" if r.get("accumulate", 1) > 1 else r.get("batch"),
                 "samples/s": fmt.num(r.get("samples_per_s"), ".1f") if r.get("fits", True) else "",
                 "peak MB": fmt.num(r.get("peak_mb"), ".0f") if r.get("peak_mb") else "",
                 "note": "✓ chosen" if r.get("batch") == chosen else r.get("reason", "")}
                for r in stage.notes["batch_sweep"]])
    return part


def pictures(run: RunData) -> Part:
    """What the trained model of the last ok stage predicts: reports/<run>/pictures.json and its PNGs."""
    part, pics = Part(), run.pictures()
    if not pics:
        return part
    stage = pics.get("stage", "?")
    part.heading(f"Predictions of the last stage ({stage})")
    if pics.get("error"):
        part.para(f"⚠ the pictures of {stage} could not be drawn: {pics['error']}")
        return part
    if pics.get("skipped"):
        part.para(f"No pictures: {pics['skipped']}.")
        return part
    files = {k: run.dir / v for k, v in pics.get("files", {}).items() if (run.dir / v).is_file()}
    seen = (f"The checkpoint of {stage} ({pics.get('trained_steps', '?')} training steps) on "
            f"{pics.get('images', '?')} validation images (the batches the metric used)")
    if pics.get("task") == "segment":
        part.para(f"{seen}: mIoU {fmt.num(pics.get('miou'), '.3f')}, pixel accuracy "
                  f"{fmt.num(pics.get('pixel_acc'), '.3f')}. Grid: image | ground-truth trimap (grey: border "
                  f"pixels, ignored) | prediction | prediction over the image.")
        rows = [{"class": c["class"], "IoU": fmt.num(c.get("iou"), ".3f"), "true pixels": c.get("true_pixels"),
                 "predicted pixels": c.get("predicted_pixels")} for c in pics.get("per_class", [])]
        part.table(rows)
        part.show_table(f"{run.name}: per-class IoU of {stage}", rows)
        part.image(files.get("segmentation_grid"), "validation images | ground-truth trimap | prediction")
        part.image(files.get("confusion_matrix"), "pixel confusion matrix")
    else:
        cam = (f"Grad-CAM skipped: {pics['cam_skipped']}." if pics.get("cam_skipped") else
               f"Grad-CAM on {pics.get('cam_layer') or 'the'} (the last conv block with maps of at least 4×4 at "
               f"this input size) shows where the evidence for the predicted class lies (red: most); a red label "
               f"is a wrong prediction.")
        part.para(f"{seen}: top-1 {fmt.num(pics.get('top1'), '.3f')}. {cam}")
        part.image(files.get("confusion_matrix"), "confusion matrix")
        part.image(files.get("cam_grid"), "Grad-CAM of validation images")
        if pics.get("attention"):
            maps = ", ".join(f"{a['estimator']} {'×'.join(map(str, a['side']))}" for a in pics["attention"])
            part.para(f"Attention of the model's own estimators ({maps} cells; each map sums to 1 over its "
                      f"cells and is drawn scaled to its peak, red: most): where each one looks to classify.")
            part.image(files.get("attention"), "attention maps of validation images")
        per_class = pics.get("per_class", [])
        if len(per_class) <= 20:  # beyond that the matrix says it better than a long table
            part.table([{"class": c["class"], "images": c.get("images"), "recall": fmt.num(c.get("recall"), ".3f"),
                         "precision": fmt.num(c.get("precision"), ".3f")} for c in per_class])
    part.para(f"TensorBoard shows the same pictures (Images tab, run {stage}): "
              f"`tensorboard --logdir {run.profiles_root / run.name}`. "
              f"`python -m study predict IMAGE --checkpoint {pics.get('checkpoint', 'CKPT')}` tries the model on "
              f"any picture.")
    return part


def trace_categories(run: RunData) -> Part:
    from study.report import plots

    part, ok = Part(), run.ok
    cats = category_frame(run, ok)
    if not len(cats):
        return part
    part.heading("Trace: step-time categories (torch.profiler)")
    part.para("ms per profiled step. Each instant of a step goes to the highest-priority active category "
              "(kernel > memcpy > memset > communication > runtime > dataloader > cpu_exec > other), so the "
              "categories add up to the profiled step; categories with no time anywhere are left out. "
              "'loop step ms' is the loop's own timer in the same steps; '× timing p50' compares the "
              "profiled step with the timing pass (profiler overhead, or other load on the machine).")
    part.table(cats)
    part.show_table(f"{run.name}: trace categories, ms/step", cats)
    odd = [r.name for r in ok if (profile_ratio(r, run.trace_summary(r) or {}) or 0) > UNREPRESENTATIVE]
    if odd:
        part.para(f"⚠ profiled steps of {', '.join(odd)} ran more than {UNREPRESENTATIVE:.0f}× slower than "
                  "the timing pass: read their categories, top ops and diffs as that slower run, not as "
                  "the measured stage (more --profile-steps, or a quieter machine).")
    with_trace = [(r.name, run.trace_summary(r) or {}) for r in ok if run.trace_summary(r)]
    part.image(plots.stacked([n for n, _ in with_trace],
                             {c: [s["categories_ms"].get(c, 0.0) for _, s in with_trace] for c in CATEGORIES},
                             run.dir / "trace_categories.png", f"{run.name}: trace categories"),
               "trace categories per stage")
    return part


def trace_diff(run: RunData) -> Part:
    part = Part()
    pairs = [(a, b) for a, b in diff_pairs(run.stages) if run.trace_summary(a) and run.trace_summary(b)]
    if not pairs:
        return part
    part.heading("What changed between stages (trace diff)")
    part.para("Per step, from one stage's trace to the next: categories, and operators (self time) or "
              "device kernels that got faster or slower (by ≥ 10 % and ≥ 0.5 % of the step, and beyond their "
              "step-to-step noise: Welch's t-test at 95 % over the profiled steps), appeared or disappeared. "
              "This is the 'why' of a speed-up; what moved only within its noise is not named.")
    for a, b in pairs:
        d = diff_ops(run.trace_summary(a), run.trace_summary(b))  # type: ignore[arg-type]
        part.show_line(f"  [bold]{a.name} → {b.name}[/]: {headline(d)}")
        part.heading(f"{a.name} → {b.name}", 3)
        noise = f" {d['within_noise']} more changed within their noise." if d.get("within_noise") else ""
        part.para(f"profiled step {fmt.num(d['step_ms'][0], '.2f')} → {fmt.num(d['step_ms'][1], '.2f')} ms "
                  f"(timing pass p50 {fmt.num(a.step_time_p50 * 1000, '.2f')} → "
                  f"{fmt.num(b.step_time_p50 * 1000, '.2f')} ms). {headline(d)}.{noise}")
        cat_df, op_df = diff_frames(d)
        part.table(cat_df)
        part.table(op_df)
    return part


# --- profiles per stage: one block per profile kind, under each stage's heading -------------------

PROFILE_LINKS = ("torch_trace", "trace_summary", "cprofile", "cprofile_top", "pyspy_svg", "pyspy_speedscope", "lines")


def profile_links(run: RunData, r: StageResult) -> Part:
    part = Part()
    part.links([(f"{key}: {p.name}", rel(p, run.dir)) for key in PROFILE_LINKS if (p := run.path(r, key))])
    for k, v in sorted(r.profiles.items()):
        if k.endswith(("_error", "_warning")):
            part.para(f"⚠ {k}: {v}")
    return part


def top_ops(run: RunData, r: StageResult) -> Part:
    part, s = Part(), run.trace_summary(r)
    if s:
        part.para(f"Top operators by self time (torch.profiler, {s.get('steps', 0)} steps):")
        part.table(top_ops_frame(s))
    return part


def cprofile(run: RunData, r: StageResult) -> Part:
    part, cp = Part(), run.cprofile(r)
    if cp:
        part.para(f"Top Python functions by own time (cProfile, {cp.get('steps', 0)} steps):")
        part.table(cprofile_frame(cp))
    return part


def lines(run: RunData, r: StageResult) -> Part:
    part, ln = Part(), run.lines(r)
    if ln:
        part.para("Hottest lines of train_step (line_profiler):")
        part.table(lines_frame(ln))
    return part


STAGE_PROFILE_PARTS: list[Callable[[RunData, StageResult], Part]] = [profile_links, top_ops, cprofile, lines]


def profiles(run: RunData) -> Part:
    part = Part()
    rows = [r for r in run.ok if r.profiles]
    if not rows:
        return part
    part.heading("Profiles per stage")
    part.para(f"Traces: `tensorboard --logdir {run.profiles_root / run.name}` "
              "(PyTorch Profiler tab, one run per stage). Flame graphs: pyspy.svg; speedscope.app opens "
              "pyspy.speedscope.json; `python -m pstats cprofile.prof` or snakeviz for cProfile.")
    for r in rows:
        part.heading(r.name, 3)
        for block in STAGE_PROFILE_PARTS:
            part.extend(block(run, r))
    return part


def skipped(run: RunData) -> Part:
    part = Part()
    rows = [r for r in run.stages if r.status != "ok"]
    if rows:
        part.heading("Skipped and failed stages")
        part.table([{"stage": r.name, "status": r.status, "why": r.reason or r.error} for r in rows])
    return part


def disk(run: RunData) -> Part:
    """What the run keeps on disk, and where: its checkpoints one by one, the rest of reports/<run>/, the traces."""
    from study.runner.clean import CHECKPOINTS, clean_command, human, usage

    part, u = Part(), usage(run.dir)
    status = {r.name: r.status for r in run.stages}
    keep_all = bool(run.config.get("config", {}).get("keep_checkpoints"))
    rows = []
    for path, size in u.checkpoints:
        stage = path.stem
        if path.suffix != ".pt" or path.parent != run.dir / CHECKPOINTS:
            what = "checkpoint file"
        elif keep_all:
            what = f"checkpoint of {stage}: weights and optimizer state (--keep-checkpoints)"
        elif status.get(stage) == "ok":
            what = f"weights of {stage}: the pictures and `study predict` read them"
        else:
            what = f"checkpoint of {stage}, which did not finish: --resume goes on from it"
        rows.append({"what": what, "where": str(path), "size": human(size)})
    rows.append({"what": "results, records, logs, summaries, pictures", "where": f"{run.dir}/", "size": human(u.reports)})
    rows.append({"what": "traces and profiler output", "where": f"{u.profile_dir}/", "size": human(u.traces)})
    part.heading("On disk")
    part.para(f"The run keeps {human(u.total)} (when this report was written). `{clean_command(run.dir)}` removes "
              f"the checkpoints and keeps results.jsonl, the reports and the traces.")
    part.table(rows)
    return part


RUN_SECTIONS: list[Section] = [header, verdict, ladder, search_table, phases, mfu, bottlenecks, compile_stats, quality,
                               pictures, worker_sweep, batch_sweep, trace_categories, trace_diff, profiles, skipped, disk]


def run_report(run_dir: Path, sections: list[Section] | None = None) -> Doc:
    """The Doc of one run; writes the run's PNGs."""
    run = RunData(run_dir)
    return Doc(f"study {run.name}", [section(run) for section in (RUN_SECTIONS if sections is None else sections)])
