"""torch.profiler pass: a bounded schedule, one trace per rank, readable by TensorBoard and by us.

The trace goes through `tensorboard_trace_handler` into profiles/<run>/<stage>/, so
`tensorboard --logdir profiles/<run>` lists one run per stage (workers rank0, rank1, ... under DDP).
The report never needs TensorBoard: `trace_summary.json` beside the trace holds the step-time
categories and operator table computed by study.profiling.trace_summary.

Knobs (environment, so a user can widen one run without changing its config hash):
  STUDY_TRACE_SHAPES=1   record_shapes     (bigger trace; shows input shapes per op)
  STUDY_TRACE_MEMORY=1   profile_memory    (allocation events)
  STUDY_TRACE_STACK=1    with_stack        (Python stacks; much bigger trace)
  STUDY_TRACE_BUDGET_MB  warn above this trace size (default 20)
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

from study.profiling import rank_path
from study.profiling.trace_summary import find_traces, summarize
from study.records import write_atomic

WAIT, WARMUP = 1, 1
DEFAULT_BUDGET_MB = 20.0


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def run(sess: Any) -> dict[str, str]:
    cfg, ctx = sess.cfg, sess.ctx
    out_dir = sess.profile_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    # A rerun of the stage replaces its trace: TensorBoard would otherwise show both as one run's spans.
    for old in find_traces(out_dir, ctx.rank):
        old.unlink()
    active = max(cfg.profile_steps - WAIT - WARMUP, 1)
    activities = [ProfilerActivity.CPU]
    if ctx.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    prof = profile(
        activities=activities,
        schedule=schedule(wait=WAIT, warmup=WARMUP, active=active, repeat=1),
        on_trace_ready=tensorboard_trace_handler(str(out_dir), worker_name=f"rank{ctx.rank}", use_gzip=True),
        record_shapes=_flag("STUDY_TRACE_SHAPES"),
        profile_memory=_flag("STUDY_TRACE_MEMORY"),
        with_stack=_flag("STUDY_TRACE_STACK"),
    )
    with prof:
        records = sess.run_steps(WAIT + WARMUP + active, hooks=[lambda rec: prof.step()])
    traces = find_traces(out_dir, ctx.rank)
    if not traces:
        raise RuntimeError(f"torch.profiler wrote no trace into {out_dir} "
                           f"({len(records)} of {WAIT + WARMUP + active} steps ran)")
    trace = traces[-1]
    paths: dict[str, str] = {"torch_trace": str(trace)}

    size_mb = trace.stat().st_size / 2**20
    budget = float(os.environ.get("STUDY_TRACE_BUDGET_MB", DEFAULT_BUDGET_MB))
    if size_mb > budget:
        msg = (f"trace {trace.name} is {size_mb:.1f} MB (budget {budget:.0f} MB): TensorBoard will load it "
               f"slowly; lower --profile-steps or leave STUDY_TRACE_SHAPES/MEMORY/STACK off")
        print(f"warning: {msg}", file=sys.stderr)
        paths["torch_warning"] = msg

    summary = summarize(trace)
    summary["trace_mb"] = size_mb
    # The loop's own step times for the profiled steps: a check on the trace's step windows.
    summary["loop_step_ms"] = [r.seconds * 1000.0 for r in records[WAIT + WARMUP:]]
    summary["device"] = str(ctx.device)
    summary["rank"] = ctx.rank
    summary_path = rank_path(sess, "trace_summary.json")
    write_atomic(summary_path, json.dumps(summary, indent=1, sort_keys=True))
    paths["trace_summary"] = str(summary_path)
    return paths
