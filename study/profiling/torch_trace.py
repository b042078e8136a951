"""torch.profiler pass: a bounded schedule, one trace per rank, readable by TensorBoard and by us.

The trace goes through `tensorboard_trace_handler` into profiles/<run>/<stage>/, so
`tensorboard --logdir profiles/<run>` lists one run per stage (workers rank0, rank1, ... under DDP).
The report never needs TensorBoard: `trace_summary.json` beside the trace holds the step-time
categories and operator table computed by study.profiling.trace_summary.

Options --trace-shapes, --trace-memory, --trace-stack widen the trace and --trace-budget-mb sets the
size above which we warn; none of them enters the config hash (they change what is recorded, not
what is measured).
"""
from __future__ import annotations

import json
import sys
from typing import Any

from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

from study.profiling.common import rank_path
from study.profiling.trace_summary import find_traces, summarize
from study.core.records import write_atomic

WAIT, WARMUP = 1, 1
# Recorded steps at least: the stage-to-stage diff judges each operator's change against its
# step-to-step spread, which two or three steps cannot show.
MIN_ACTIVE = 5


def run(sess: Any) -> dict[str, str]:
    cfg, ctx = sess.cfg, sess.ctx
    out_dir = sess.profile_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    # A rerun of the stage replaces its trace: TensorBoard would otherwise show both as one run's spans.
    for old in find_traces(out_dir, ctx.rank):
        old.unlink()
    active = max(cfg.profile_steps - WAIT - WARMUP, MIN_ACTIVE)
    activities = [ProfilerActivity.CPU]
    if ctx.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    prof = profile(
        activities=activities,
        schedule=schedule(wait=WAIT, warmup=WARMUP, active=active, repeat=1),
        on_trace_ready=tensorboard_trace_handler(str(out_dir), worker_name=f"rank{ctx.rank}", use_gzip=True),
        record_shapes=cfg.trace_shapes,
        profile_memory=cfg.trace_memory,
        with_stack=cfg.trace_stack,
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
    budget = cfg.trace_budget_mb
    if size_mb > budget:
        msg = (f"trace {trace.name} is {size_mb:.1f} MB (budget {budget:.0f} MB): TensorBoard will load it "
               f"slowly; lower --profile-steps or leave --trace-shapes/--trace-memory/--trace-stack off")
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
