"""Trace summaries: each step's time per category, self times, and the stage-to-stage diff."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from study.profiling.trace_summary import CATEGORIES, diff_ops, headline, load_trace, summarize


def ev(name, cat, ts, dur, pid=1, tid=1):
    return {"ph": "X", "name": name, "cat": cat, "ts": ts, "dur": dur, "pid": pid, "tid": tid}


def trace(steps: list[list[dict]], step_us: float = 100.0) -> dict:
    """Steps laid end to end; event times in each list are relative to its step's start."""
    events = []
    for i, step in enumerate(steps):
        t0 = 1000.0 + i * step_us
        events.append(ev(f"ProfilerStep#{i + 2}", "user_annotation", t0, step_us))
        for e in step:
            events.append({**e, "ts": t0 + e["ts"]})
    return {"traceEvents": events + [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "python"}}]}


def write(path: Path, doc: dict) -> Path:
    with gzip.open(path, "wt") as fh:
        json.dump(doc, fh)
    return path


def test_categories_follow_priority_on_planted_steps():
    """Two planted steps of 100 µs with known spans: each category's time per step, and their mean."""
    busy = [
        ev("enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__", "user_annotation", 0, 20),
        ev("aten::stack", "cpu_op", 5, 10),  # collate inside __next__: dataloader time
        ev("aten::conv2d", "cpu_op", 20, 40),
        ev("cudaLaunchKernel", "cuda_runtime", 30, 5),
        ev("void implicit_gemm", "kernel", 32, 38, pid=0, tid=7),  # GPU busy 32..70
        ev("ncclDevKernel_AllReduce", "kernel", 60, 20, pid=0, tid=9),  # exposed 70..80 only
    ]
    host_only = [
        ev("enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__", "user_annotation", 0, 40),
        ev("aten::conv2d", "cpu_op", 40, 50),
        ev("aten::relu", "cpu_op", 60, 10),  # nested in the conv: counted once
        ev("aten::add", "cpu_op", 95, 20),  # runs past the step's end: only 95..100 is this step's
    ]
    s = summarize(trace([busy, host_only]))
    assert s["steps"] == 2 and s["step_ms_mean"] == pytest.approx(0.1)
    zero = dict.fromkeys(CATEGORIES, 0.0)
    first = {**zero, "dataloader": 0.020, "cpu_exec": 0.010, "runtime": 0.002, "kernel": 0.038,  # cpu 20..30 only:
             "communication": 0.010, "other": 0.020}  # 32..60 is under the kernel; 80..100: nothing recorded
    second = {**zero, "dataloader": 0.040, "cpu_exec": 0.055, "other": 0.005}  # 90..95: a gap
    assert s["categories_per_step"] == [pytest.approx(first), pytest.approx(second)]
    assert s["categories_ms"] == pytest.approx({c: (first[c] + second[c]) / 2 for c in CATEGORIES})


def test_device_mirrors_of_annotations_are_not_steps():
    """CUDA traces repeat ProfilerStep#N and DataLoader annotations on the GPU timeline."""
    step = [ev("ProfilerStep#9", "gpu_user_annotation", 0, 100, pid=0, tid=7),
            ev("enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__", "gpu_user_annotation", 0, 60, pid=0),
            ev("aten::mm", "cpu_op", 0, 10), ev("gemm", "kernel", 10, 30, pid=0, tid=7),
            ev("Memcpy HtoD", "gpu_memcpy", 50, 5, pid=0, tid=7), ev("Memset", "gpu_memset", 55, 5, pid=0, tid=7)]
    s = summarize(trace([step]))
    assert s["steps"] == 1
    c = s["categories_ms"]
    assert c["dataloader"] == 0 and c["cpu_exec"] == pytest.approx(0.010)
    assert (c["kernel"], c["memcpy"], c["memset"]) == pytest.approx((0.030, 0.005, 0.005))
    assert s["kernels"]["gemm"]["total_ms"] == pytest.approx(0.030) and s["device_events"]


def test_self_time_excludes_nested_ops_and_ops_are_per_step():
    step = [ev("aten::linear", "cpu_op", 0, 50), ev("aten::addmm", "cpu_op", 10, 20), ev("aten::t", "cpu_op", 32, 3)]
    s = summarize(trace([step, step, step]))
    assert s["ops"]["aten::linear"]["self_ms"] == pytest.approx(0.027)
    assert s["ops"]["aten::linear"]["total_ms"] == pytest.approx(0.050)
    assert s["ops"]["aten::addmm"]["self_ms"] == pytest.approx(0.020)
    assert s["ops"]["aten::t"]["calls"] == pytest.approx(1.0)


def test_trace_without_profiler_steps_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="ProfilerStep"):
        summarize({"traceEvents": [ev("aten::add", "cpu_op", 0, 1)]})


def test_diff_names_faster_slower_appeared_and_disappeared(tmp_path):
    before = [ev("aten::convolution", "cpu_op", 0, 40), ev("aten::relu_", "cpu_op", 40, 10),
              ev("aten::batch_norm", "cpu_op", 50, 20), ev("aten::add_", "cpu_op", 70, 5)]
    after = [ev("aten::convolution", "cpu_op", 0, 15), ev("aten::relu_", "cpu_op", 15, 10),
             ev("prim::FusedBatchNormRelu", "cpu_op", 25, 12), ev("aten::add_", "cpu_op", 37, 9)]
    a = write(tmp_path / "rank0.1.pt.trace.json.gz", trace([before, before]))
    b = write(tmp_path / "rank0.2.pt.trace.json.gz", trace([after, after]))
    d = diff_ops(a, b)
    assert [i["name"] for i in d["faster"]] == ["aten::convolution"]
    assert d["faster"][0]["delta_ms"] == pytest.approx(-0.025)
    assert [i["name"] for i in d["slower"]] == ["aten::add_"]
    assert [i["name"] for i in d["appeared"]] == ["prim::FusedBatchNormRelu"]
    assert [i["name"] for i in d["disappeared"]] == ["aten::batch_norm"]
    unchanged = {i["name"] for k in ("faster", "slower", "appeared", "disappeared") for i in d[k]}
    assert "aten::relu_" not in unchanged
    line = headline(d)
    assert "aten::convolution" in line and "prim::FusedBatchNormRelu" in line and "aten::batch_norm" in line
    # summaries work as inputs too, and a summary diffed with itself shows nothing
    same = diff_ops(summarize(a), summarize(a))
    assert not any(same[k] for k in ("faster", "slower", "appeared", "disappeared"))
    assert "aten::" not in headline(same)


def test_a_change_within_the_step_to_step_noise_is_not_called_a_cause(tmp_path):
    """Five profiled steps a stage. The convolution jitters by ±20 µs from step to step in both
    stages, and its mean moves by 12 % (well past the size thresholds): within its noise, so not
    named. The ReLU moves by 50 % with no jitter: named. A planted no-op stage diffed against the
    baseline names nothing."""
    conv_a, conv_b = [40, 80, 50, 70, 60], [75, 45, 85, 55, 76]  # means 60 and 67.2
    a = [[ev("aten::convolution", "cpu_op", 0, c), ev("aten::relu_", "cpu_op", 90, 4)] for c in conv_a]
    b = [[ev("aten::convolution", "cpu_op", 0, c), ev("aten::relu_", "cpu_op", 90, 6)] for c in conv_b]
    d = diff_ops(summarize(trace(a)), summarize(trace(b)))
    assert [i["name"] for i in d["slower"]] == ["aten::relu_"] and d["within_noise"] == 1
    assert not d["faster"] and "aten::convolution" not in headline(d)
    assert d["categories"]["cpu_exec"]["beyond_noise"] is False  # the step's op time moves with the jitter
    noop = [[ev("aten::convolution", "cpu_op", 0, c), ev("aten::relu_", "cpu_op", 90, 4)] for c in reversed(conv_a)]
    quiet = diff_ops(summarize(trace(a)), summarize(trace(noop)))
    assert not quiet["faster"] and not quiet["slower"]


def test_load_trace_reads_plain_gz_and_bare_array(tmp_path):
    doc = trace([[ev("aten::add", "cpu_op", 0, 1)]])
    (tmp_path / "a.pt.trace.json").write_text(json.dumps(doc["traceEvents"]))
    write(tmp_path / "b.pt.trace.json.gz", doc)
    assert len(load_trace(tmp_path / "a.pt.trace.json")["traceEvents"]) == len(doc["traceEvents"])
    assert summarize(tmp_path / "b.pt.trace.json.gz")["steps"] == 1


def test_real_trace_categories_match_the_profiled_step_time(make_session):
    """A trace written by a real short run: its steps hold the model's operators, and its categories
    sum to the loop's own step time (± 10 %)."""
    import torch

    from study.profiling import torch_trace

    sess = make_session(profile_steps=5)
    paths = torch_trace.run(sess)
    trace_path = Path(paths["torch_trace"])
    assert trace_path.name.startswith("rank0.") and trace_path.name.endswith(".pt.trace.json.gz")
    assert trace_path.parent == sess.profile_dir
    s = json.loads(Path(paths["trace_summary"]).read_text())
    assert s["steps"] == torch_trace.MIN_ACTIVE  # profile_steps 5 = wait 1 + warmup 1, then at least 5 recorded
    # per step, each conv layer of the model runs once forward and once backward
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in sess.state.model.modules())
    assert convs == 3 and s["ops"]["aten::conv2d"]["calls"] == convs
    assert s["ops"]["aten::convolution_backward"]["calls"] == convs
    total = sum(s["categories_ms"].values())
    loop = sum(s["loop_step_ms"]) / len(s["loop_step_ms"])  # the loop's own clock, not the trace's
    assert total == pytest.approx(loop, rel=0.10)
    assert s["categories_ms"]["cpu_exec"] > 0 and s["categories_ms"]["dataloader"] > 0
    assert any(name.startswith("aten::") for name in s["ops"])
    assert "torch_warning" not in paths
    # a second run of the pass replaces the trace rather than piling up spans; over budget it warns
    again = torch_trace.run(make_session(profile_steps=5, trace_budget_mb=0.001))
    assert len(list(sess.profile_dir.glob("rank0.*.pt.trace.json.gz"))) == 1
    assert "budget" in again["torch_warning"]
