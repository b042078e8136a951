"""Read torch.profiler traces without TensorBoard: step-time categories, top operators, stage diffs.

A trace is Chrome trace JSON (`*.pt.trace.json[.gz]`): complete events (`ph: "X"`, `ts`/`dur` in µs)
with a `cat` such as cpu_op, user_annotation, kernel, gpu_memcpy, gpu_memset, cuda_runtime.
The profiler marks each scheduled step with a `ProfilerStep#N` annotation on the training thread.

Categories partition each step's wall time: every instant of a ProfilerStep window goes to the
highest-priority category that is active at that instant, so the categories add up to the step time
exactly. The priority says what the step was waiting on:

    kernel > memcpy > memset > communication (device) > runtime > dataloader > cpu_exec
           > communication (host) > other

GPU work wins over host work (the device is busy, the host is only feeding it). Collective kernels
count as communication only when no compute kernel overlaps them, and host-side collectives (gloo)
only when no host op runs: both measure *exposed* communication. Operators run inside the DataLoader's
`__next__` (collate) count as dataloader time. `other` is time no profiled event covers (Python
between ops, waiting with nothing recorded).
"""
from __future__ import annotations

import bisect
import gzip
import json
import math
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from study.core.stats import t95

CATEGORIES = ("kernel", "memcpy", "memset", "communication", "runtime", "dataloader", "cpu_exec", "other")
# Priority levels for the sweep (lower wins) and the category each level reports as.
_LEVELS = ("kernel", "memcpy", "memset", "communication", "runtime", "dataloader", "cpu_exec", "communication")
_LEVEL = {"kernel": 0, "memcpy": 1, "memset": 2, "comm_device": 3, "runtime": 4, "dataloader": 5,
          "cpu_exec": 6, "comm_host": 7}

_COMM = re.compile(r"nccl|gloo|c10d::|all_?reduce|all_?gather|reduce_?scatter|all_?to_?all|broadcast|"
                   r"send_?recv|barrier", re.IGNORECASE)
_RUNTIME_CATS = {"cuda_runtime", "cuda_driver", "runtime", "driver", "hip_runtime"}
_DEVICE_CATS = {"kernel", "gpu_memcpy", "gpu_memset"}
STEP_PREFIX = "ProfilerStep#"


def is_dataloader(name: str) -> bool:
    return name.startswith("enumerate(DataLoader)") or ("DataLoader" in name and "__next__" in name)


def classify(event: dict) -> str | None:
    """The sweep level of one complete event, or None when it does not take part."""
    cat = str(event.get("cat", "")).lower()
    name = str(event.get("name", ""))
    if cat == "kernel":
        return "comm_device" if _COMM.search(name) else "kernel"
    if cat == "gpu_memcpy":
        return "memcpy"
    if cat == "gpu_memset":
        return "memset"
    if cat in _RUNTIME_CATS:
        return "runtime"
    if is_dataloader(name):
        return "dataloader"
    if cat in ("cpu_op", "user_annotation") and _COMM.search(name):
        return "comm_host"
    if cat == "cpu_op":
        return "cpu_exec"
    return None


# --- loading ----------------------------------------------------------------------------------

def load_trace(path: str | Path) -> dict:
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as fh:  # type: ignore[operator]
        data = json.load(fh)
    if isinstance(data, list):  # the bare-array form of the Chrome trace format
        data = {"traceEvents": data}
    return data


def find_traces(profile_dir: str | Path, rank: int = 0) -> list[Path]:
    """This rank's traces in a stage's profile folder, newest last."""
    d = Path(profile_dir)
    found = list(d.glob(f"rank{rank}.*.pt.trace.json")) + list(d.glob(f"rank{rank}.*.pt.trace.json.gz"))
    return sorted(found, key=lambda p: p.stat().st_mtime)


# --- the sweep --------------------------------------------------------------------------------

def _partition(window: tuple[float, float], intervals: list[tuple[float, float, int]]) -> list[float]:
    """Seconds of `window` won by each priority level (last slot: no level active → other)."""
    w0, w1 = window
    edges: list[tuple[float, int, int]] = []
    for s, e, lvl in intervals:
        s, e = max(s, w0), min(e, w1)
        if e > s:
            edges.append((s, 1, lvl))
            edges.append((e, -1, lvl))
    edges.sort(key=lambda t: (t[0], t[1]))
    out = [0.0] * (len(_LEVELS) + 1)
    active = [0] * len(_LEVELS)
    t = w0
    for when, delta, lvl in edges:
        if when > t:
            top = next((i for i, n in enumerate(active) if n), len(_LEVELS))
            out[top] += when - t
            t = when
        active[lvl] += delta
    if w1 > t:
        top = next((i for i, n in enumerate(active) if n), len(_LEVELS))
        out[top] += w1 - t
    return out


def _self_times(events: list[dict]) -> dict[int, float]:
    """Self (exclusive) µs of each cpu_op: its duration minus that of the cpu_ops nested directly in
    it on the same thread. Keys are indexes into `events`."""
    by_thread: dict[tuple[Any, Any], list[int]] = defaultdict(list)
    for i, e in enumerate(events):
        by_thread[(e.get("pid"), e.get("tid"))].append(i)
    self_us: dict[int, float] = {}
    for idx in by_thread.values():
        idx.sort(key=lambda i: (events[i]["ts"], -events[i].get("dur", 0)))
        stack: list[tuple[int, float]] = []  # (index, end)
        for i in idx:
            e = events[i]
            start, end = e["ts"], e["ts"] + e.get("dur", 0)
            while stack and stack[-1][1] <= start:
                stack.pop()
            self_us[i] = float(e.get("dur", 0))
            if stack:
                self_us[stack[-1][0]] -= min(end, stack[-1][1]) - start
            stack.append((i, end))
    return {i: max(v, 0.0) for i, v in self_us.items()}


def _step_finder(steps: list[dict]):
    """ts -> the index of the step window holding it (None: outside every window)."""
    starts = [float(s["ts"]) for s in steps]
    ends = [float(s["ts"]) + float(s.get("dur", 0)) for s in steps]

    def find(ts: float) -> int | None:
        k = bisect.bisect_right(starts, ts) - 1
        return k if 0 <= k and ts < ends[k] else None
    return find


def summarize(trace: dict | str | Path, path: str | Path | None = None) -> dict:
    """Step-time categories (ms per step), every operator's and kernel's time per step."""
    if not isinstance(trace, dict):
        path = path or trace
        trace = load_trace(trace)
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X" and "ts" in e]
    # Host annotations only: CUDA traces mirror them on the device timeline as gpu_user_annotation.
    steps = sorted((e for e in events if str(e.get("name", "")).startswith(STEP_PREFIX)
                    and not str(e.get("cat", "")).lower().startswith("gpu_")), key=lambda e: e["ts"])
    if not steps:
        raise ValueError(f"no {STEP_PREFIX}N annotations in trace {path or ''}: was the profiler stepped?")
    host_pid = steps[0].get("pid")
    intervals: list[tuple[float, float, int]] = []
    for e in events:
        lvl = classify(e)
        if lvl is None:
            continue
        if str(e.get("cat", "")).lower() not in _DEVICE_CATS and e.get("pid") != host_pid:
            continue  # host events of another process (none normally; traces are per rank)
        intervals.append((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0)), _LEVEL[lvl]))
    intervals.sort()

    per_step: list[dict[str, float]] = []
    step_ms: list[float] = []
    for st in steps:
        w0, w1 = float(st["ts"]), float(st["ts"]) + float(st.get("dur", 0))
        # intervals is sorted by start; only those starting before the window's end can overlap it
        parts = _partition((w0, w1), [iv for iv in intervals if iv[0] < w1 and iv[1] > w0])
        cats = dict.fromkeys(CATEGORIES, 0.0)
        for lvl, us in enumerate(parts[:-1]):
            cats[_LEVELS[lvl]] += us / 1000.0
        cats["other"] += parts[-1] / 1000.0
        per_step.append(cats)
        step_ms.append((w1 - w0) / 1000.0)
    n = len(steps)

    ops: dict[str, dict[str, float]] = defaultdict(lambda: {"calls": 0.0, "self_ms": 0.0, "total_ms": 0.0})
    cpu_ops = [e for e in events if e.get("cat") == "cpu_op" and e.get("pid") == host_pid]
    self_us = _self_times(cpu_ops)
    # each operator's self time in each profiled step: the step-to-step spread a diff is judged against
    op_steps: dict[str, list[float]] = defaultdict(lambda: [0.0] * n)
    step_of = _step_finder(steps)
    for i, e in enumerate(cpu_ops):
        o = ops[str(e.get("name"))]
        o["calls"] += 1
        o["self_ms"] += self_us[i] / 1000.0
        o["total_ms"] += float(e.get("dur", 0)) / 1000.0
        k = step_of(float(e["ts"]))
        if k is not None:
            op_steps[str(e.get("name"))][k] += self_us[i] / 1000.0
    kernels: dict[str, dict[str, float]] = defaultdict(lambda: {"calls": 0.0, "total_ms": 0.0})
    device_steps = sorted((e for e in events if str(e.get("name", "")).startswith(STEP_PREFIX)
                           and str(e.get("cat", "")).lower().startswith("gpu_")), key=lambda e: e["ts"])
    kernel_steps: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(device_steps))
    kernel_step_of = _step_finder(device_steps)
    for e in events:
        if str(e.get("cat", "")).lower() in _DEVICE_CATS:
            k = kernels[str(e.get("name"))]
            k["calls"] += 1
            k["total_ms"] += float(e.get("dur", 0)) / 1000.0
            j = kernel_step_of(float(e["ts"]))
            if j is not None:
                kernel_steps[str(e.get("name"))][j] += float(e.get("dur", 0)) / 1000.0

    def per_step_table(table: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return {name: {k: v / n for k, v in vals.items()} for name, vals in table.items()}

    return {
        "trace": str(path) if path else "",
        "steps": n,
        "step_names": [str(s.get("name")) for s in steps],
        "step_ms": step_ms,
        "step_ms_mean": sum(step_ms) / n,
        "categories_ms": {c: sum(s[c] for s in per_step) / n for c in CATEGORIES},
        "categories_per_step": per_step,
        "ops": per_step_table(ops),
        "ops_per_step": dict(op_steps),
        "kernels": per_step_table(kernels),
        "kernels_per_step": dict(kernel_steps),
        "device_events": bool(kernels),
    }


def top_ops(summary: dict, n: int = 15, key: str = "self_ms") -> list[tuple[str, dict[str, float]]]:
    return sorted(summary.get("ops", {}).items(), key=lambda kv: -kv[1].get(key, 0.0))[:n]


def top_kernels(summary: dict, n: int = 15) -> list[tuple[str, dict[str, float]]]:
    return sorted(summary.get("kernels", {}).items(), key=lambda kv: -kv[1].get("total_ms", 0.0))[:n]


# --- diff between stages ----------------------------------------------------------------------

def _as_summary(x: dict | str | Path) -> dict:
    if isinstance(x, dict) and "ops" in x:
        return x
    if isinstance(x, (str, Path)) and str(x).endswith("trace_summary.json"):
        return json.loads(Path(x).read_text())
    return summarize(x)


def beyond_noise(xa: list[float] | None, xb: list[float] | None) -> bool:
    """Whether two stages' per-step figures differ beyond their step-to-step noise: Welch's t-test at
    95 % (the mean difference over its standard error, against t with min(n) - 1 degrees of freedom,
    which is conservative). Fewer than two steps on either side cannot tell: True, and the size
    thresholds alone decide (traces summarised before the per-step figures were kept)."""
    if not xa or not xb or len(xa) < 2 or len(xb) < 2:
        return True
    se = math.sqrt(statistics.variance(xa) / len(xa) + statistics.variance(xb) / len(xb))
    return abs(statistics.fmean(xb) - statistics.fmean(xa)) > t95(min(len(xa), len(xb)) - 1) * se


def shares(per_step: list[float] | None, summary: dict) -> list[float] | None:
    """An operator's share of each profiled step. A profiling run that the machine slowed as a whole
    (a neighbour, the clock) scales every operator alike and leaves their shares where they were."""
    steps = summary.get("step_ms", [])
    if not per_step or len(per_step) != len(steps):
        return None
    return [x / s for x, s in zip(per_step, steps) if s > 0]


def diff_ops(a: dict | str | Path, b: dict | str | Path, *, rel: float = 0.10, min_ms: float | None = None) -> dict:
    """What changed from stage a to stage b, per step: operators (self time) and device kernels that
    got faster or slower, appeared or disappeared, and the change of each category.

    An op counts as faster/slower when its time changed by at least `rel` of its old time, by at least
    `min_ms` (default 0.5 % of the longer step, so tiny ops are not listed), and beyond its step-to-step
    noise both in milliseconds and in its share of the step (beyond_noise on each): one profiling run
    per stage cannot show run-to-run noise, and a run the machine slowed as a whole moves every op's
    milliseconds but not their shares. "within_noise" counts those that changed by size alone. A category's change carries the same test. Appeared/disappeared ops are listed whatever
    their size, largest first. a, b: summaries (dicts from `summarize`), trace_summary.json paths, or
    trace paths.
    """
    sa, sb = _as_summary(a), _as_summary(b)
    if min_ms is None:
        min_ms = 0.005 * max(sa.get("step_ms_mean", 0.0), sb.get("step_ms_mean", 0.0))
    out: dict[str, Any] = {"faster": [], "slower": [], "appeared": [], "disappeared": [],
                           "step_ms": [sa.get("step_ms_mean", 0.0), sb.get("step_ms_mean", 0.0)],
                           "steps": [sa.get("steps", 0), sb.get("steps", 0)],
                           "categories": {}, "min_ms": min_ms, "rel": rel, "within_noise": 0}
    for kind, table, key in (("op", "ops", "self_ms"), ("kernel", "kernels", "total_ms")):
        ta, tb = sa.get(table, {}), sb.get(table, {})
        pa, pb = sa.get(f"{table}_per_step", {}), sb.get(f"{table}_per_step", {})
        for name in set(ta) | set(tb):
            va = ta.get(name, {}).get(key, 0.0)
            vb = tb.get(name, {}).get(key, 0.0)
            item = {"name": name, "kind": kind, "a_ms": va, "b_ms": vb, "delta_ms": vb - va,
                    "a_calls": ta.get(name, {}).get("calls", 0.0), "b_calls": tb.get(name, {}).get("calls", 0.0)}
            if name not in ta:
                out["appeared"].append(item)
            elif name not in tb:
                out["disappeared"].append(item)
            elif abs(vb - va) >= min_ms and abs(vb - va) >= rel * va:
                if not (beyond_noise(pa.get(name), pb.get(name))
                        and beyond_noise(shares(pa.get(name), sa), shares(pb.get(name), sb))):
                    out["within_noise"] += 1
                    continue
                item["ratio"] = va / vb if vb else float("inf")  # > 1: faster
                out["faster" if vb < va else "slower"].append(item)
    out["faster"].sort(key=lambda i: i["delta_ms"])
    out["slower"].sort(key=lambda i: -i["delta_ms"])
    out["appeared"].sort(key=lambda i: -i["b_ms"])
    out["disappeared"].sort(key=lambda i: -i["a_ms"])
    ca, cb = sa.get("categories_ms", {}), sb.get("categories_ms", {})
    qa, qb = sa.get("categories_per_step", []), sb.get("categories_per_step", [])
    out["categories"] = {c: {"a_ms": ca.get(c, 0.0), "b_ms": cb.get(c, 0.0),
                             "delta_ms": cb.get(c, 0.0) - ca.get(c, 0.0),
                             "beyond_noise": beyond_noise([s.get(c, 0.0) for s in qa], [s.get(c, 0.0) for s in qb])}
                         for c in CATEGORIES}
    return out


def headline(diff: dict, n: int = 3) -> str:
    """One line naming the biggest changes, for consoles and tables."""
    def names(items: Iterable[dict], sign: str) -> str:
        return ", ".join(f"{i['name']} ({sign}{abs(i['delta_ms']):.2f} ms)" for i in list(items)[:n])

    parts = []
    if diff["faster"]:
        parts.append("faster: " + names(diff["faster"], "−"))
    if diff["slower"]:
        parts.append("slower: " + names(diff["slower"], "+"))
    if diff["appeared"]:
        parts.append("new: " + names(diff["appeared"], "+"))
    if diff["disappeared"]:
        parts.append("gone: " + names(diff["disappeared"], "−"))
    return "; ".join(parts) or "no op changed beyond its step-to-step noise"
