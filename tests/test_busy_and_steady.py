"""Figures on a real machine: the share of the CPU others used while a stage was timed (a busy run is
timed again, flagged, and never refutes a toggle), and whether the measured steps were steady (a
slow start joins the warm-up)."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from study.advice import ladder_measurements, refutations
from study.train.loop import StepRecord
from study.core.machine_load import BUSY_SHARE, LoadWatch, own_cpu_seconds
from study.core.records import StageResult
from study.report.ladder import checks
from study.core.stats import steadiness
from study.stage.timing_pass import extend_warmup

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def test_the_studys_own_waited_children_count_as_its_own():
    before = own_cpu_seconds()
    subprocess.run([sys.executable, "-c", BURN.format(s=0.5)], check=True, timeout=60)
    assert own_cpu_seconds() - before >= 0.45  # the child's CPU reaches the parent when it is waited for


@pytest.mark.slow  # two burners of 2 CPU-seconds each
def test_a_cpu_burner_outside_the_study_raises_the_foreign_share():
    import os

    watch = LoadWatch()
    t0 = time.monotonic()
    # Each burner says when it is done on its stdout: reading that does not reap it (poll() or wait()
    # would, and a reaped child's CPU time is the parent's own from then on).
    burners = [subprocess.Popen([sys.executable, "-c", BURN.format(s=2.0) + "print('done', flush=True)\n"],
                                stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for b in burners:
        assert b.stdout.readline().strip() == "done"
    share = watch.foreign_share()  # read before the burners are waited for: they are not the study's
    wall = time.monotonic() - t0
    for b in burners:
        b.wait(timeout=60)
        b.stdout.close()
    burnt = 4.0 / ((os.cpu_count() or 1) * wall)  # the burners' share alone, whatever else ran
    assert share >= 0.8 * min(burnt, 1.0), (share, burnt)


def row(name: str, stage: int, stack: list[str], tps: float, foreign: float = 0.0, **kw) -> StageResult:
    return StageResult(run="r", stage=stage, name=name, stack=stack, throughput=tps, throughput_ci_low=tps * 0.95,
                       throughput_ci_high=tps * 1.05, steps_measured=20, foreign_cpu_share=foreign, **kw)


def test_a_busy_stage_is_flagged_and_never_refutes_its_toggle():
    base = row("00-base", 0, [], 100.0)
    quiet_amp = row("01-amp", 1, ["amp"], 50.0)
    busy_amp = row("01-amp", 1, ["amp"], 50.0, foreign=0.6)
    assert "busy" in checks(busy_amp) and "60" in checks(busy_amp)
    assert "busy" not in checks(quiet_amp)
    assert "amp" in refutations(ladder_measurements([base, quiet_amp]))
    measured = ladder_measurements([base, busy_amp])
    assert measured[0].busy and "busy machine" in measured[0].where and refutations(measured) == {}
    assert refutations(ladder_measurements([row("00-base", 0, [], 100.0, foreign=0.5), quiet_amp])) == {}


def test_steadiness_sees_a_trend_and_not_noise():
    assert steadiness([1.0, 1.02, 0.98, 1.01, 0.99, 1.03, 0.97, 1.0, 1.01, 0.99]) == (True, pytest.approx(0.0, abs=0.03))
    steady, drift = steadiness([1.0] * 6 + [1.3] * 6)  # the second half 30 % slower: a thermal throttle
    assert steady is False and drift == pytest.approx(0.3)
    assert steadiness([1.0, 2.0, 3.0]) == (None, 0.0)  # too few steps to tell


def steps(seconds: list[float], warmup: int) -> list[StepRecord]:
    return [StepRecord(step=i, epoch=0, start=0.0, seconds=s, phases={}, samples=8, loss=1.0, measured=i >= warmup)
            for i, s in enumerate(seconds)]


def test_a_slow_start_joins_the_warm_up_within_its_bound():
    falling = steps([3.0, 1.0, 0.5, 0.3, 0.2, 0.2, 0.21, 0.2, 0.2, 0.2], warmup=1)
    assert extend_warmup(falling) == 3  # 1.0, 0.5, 0.3 were still speeding up; 0.2 is where it settled
    assert [r.measured for r in falling] == [False] * 4 + [True] * 6
    flat = steps([3.0] + [0.2] * 9, warmup=1)
    assert extend_warmup(flat) == 0
    endless = steps([2.0 * 0.8 ** i for i in range(12)], warmup=2)  # never settles
    assert extend_warmup(endless) == 5  # never more than half of the measured steps


def test_a_stage_with_a_planted_slow_start_extends_its_warm_up_and_is_steady(synthetic_root, tmp_path, monkeypatch):
    """Step times planted on the loop's clock (perf_counter moved forward inside the model's forward, no
    sleeping): 10, 8, 6, 5 s for the first steps, as a profiling executor's are, then a steady 2 s. The
    three measured steps still falling join the warm-up, the steady ones alone are timed, and they are
    steady; the machine's own few milliseconds a step cannot change any of it."""
    from study.stage.timing_pass import timing_pass
    from tests.optimizations.helpers import make_session, tiny_config

    sess = make_session(tiny_config(synthetic_root, tmp_path, steps=12, warmup=1, subset=128))  # 12 of 16 batches
    planted = iter([8.0, 6.0, 4.0, 3.0])
    ahead = [0.0]
    real_clock = time.perf_counter
    monkeypatch.setattr(time, "perf_counter", lambda: real_clock() + ahead[0])
    model = sess.state.model
    forward = model.forward

    def slow_start(x):
        ahead[0] += next(planted, 0.0) + 2.0
        return forward(x)

    model.forward = slow_start
    row = timing_pass(sess, 0)
    assert row.status == "ok", row.error
    assert row.notes["warmup_extended"] == 3, row.notes  # the 8, 6 and 5 s steps; the first was the warm-up
    assert row.steps_measured == 11 - 3
    assert 2.0 <= row.step_time_p50 < 5.0  # a steady step, not one of those left out
    assert row.warmup_seconds >= 10 + 8 + 6 + 5 and row.steady is True


def test_a_busy_run_is_measured_again_and_the_stage_keeps_the_quieter(tmp_path, monkeypatch):
    """The runner's rule on planted loads (the load itself is measured by the burner test above):
    a busy attempt is timed again, every attempt is a row, the stage keeps the quietest, the verdict
    says the machine was busy."""
    import json
    from dataclasses import asdict

    import study.runner.ladder as stages
    from study.core.config import RunConfig
    from study.core.machine import Env
    from study.report import build_report

    shares = iter([0.7, 0.5, 0.6])  # busy three times: the first run and both retries
    monkeypatch.setenv("STUDY_BUSY_RETRIES", "2")

    def fake_child(cmd, log, out, on_steps=None, record_load=False):
        row = row_payload(next(shares))
        return asdict(row), ""

    def row_payload(share):
        return row("00-base", 0, [], 100.0 * (1 - share), foreign=share, status="ok", kind="repeat", repeat=0)

    monkeypatch.setattr(stages, "run_child", fake_child)
    cfg = RunConfig(model="tiny", run_name="busy", reports_root=str(tmp_path / "reports"), profile=(),
                    profiles_root=str(tmp_path / "profiles"), no_pictures=True)
    runner = stages.StageRunner(cfg, [], Env(device_type="cpu", cuda_count=0, cpu_count=2))
    warnings = []
    runner.on_warning = warnings.append
    st = runner.stages[0]
    stage = runner.stage_row(st, [runner.timed_run(st, 0)])
    rows = [json.loads(ln) for ln in (cfg.report_dir / "results.jsonl").read_text().splitlines()]
    assert [r["foreign_cpu_share"] for r in rows if r["kind"] == "repeat"] == [0.7, 0.5, 0.6]  # all kept
    assert stage.foreign_cpu_share == 0.5 and stage.throughput == pytest.approx(50.0)  # the quietest attempt
    # one line a busy attempt, naming the stage and its share; the last says how many runs were made
    import re

    shares = [re.findall(r"(\d+) ?%", w) for w in warnings]
    assert all(w.startswith("00-base") for w in warnings) and shares == [["70"], ["50"], ["60"]], warnings
    assert len(warnings) == 3 and "3 runs" in warnings[2] and "3 runs" not in warnings[0]
    build_report([cfg.report_dir])
    summary = (cfg.report_dir / "summary.md").read_text()
    busy = [line for line in summary.splitlines() if "busy" in line]
    assert any("1 of 1" in line for line in busy) and any("50" in line for line in busy)


@pytest.mark.slow  # a child that reports progress for about 5 s
def test_the_parent_draws_the_live_curve_from_the_progress_file(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from study.core.child_process import run_child
    from study.runner.live_scalars import LiveScalars
    from study.core.stage_spec import PROGRESS_ENV

    child = (f"import json, os, time\nfrom study.core.stage_spec import write_progress\n"
             f"for step in range(1, 6):\n"
             f"    write_progress(os.environ[{PROGRESS_ENV!r}], step, 5, 2.0 / step, 100.0 * step)\n"
             f"    time.sleep(1.0)\n"
             f"open({str(tmp_path / 'out.json')!r}, 'w').write(json.dumps({{'ok': 1}}))\n")
    live = LiveScalars(tmp_path / "tb")
    seen = []
    payload, err = run_child([sys.executable, "-c", child], tmp_path / "log.txt", tmp_path / "out.json",
                             on_steps=lambda *p: (seen.append(p), live.add(*p[:1], *p[2:])))
    live.close()
    assert payload == {"ok": 1}, err
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    losses = events.Scalars("live/train_loss")
    assert 2 <= len(losses) <= 5 and [e.step for e in losses] == sorted({e.step for e in losses})
    assert all(e.value == pytest.approx(2.0 / e.step) for e in losses)  # the point the child reported at that step
    assert all(e.value == pytest.approx(100.0 * e.step) for e in events.Scalars("live/samples_per_s"))


def test_gpu_processes_of_the_study_are_its_own_and_others_are_counted(monkeypatch):
    import os
    import types

    from study.core import machine_load

    assert machine_load.in_study(os.getpid(), os.getppid())  # a child of the study is the study's
    assert not machine_load.in_study(os.getppid(), os.getpid())  # its parent is not
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed: no answer, not zero
    assert machine_load.foreign_gpu_processes(0) == -1
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetComputeRunningProcesses=lambda h: [types.SimpleNamespace(pid=os.getpid()),
                                                        types.SimpleNamespace(pid=1)])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv(machine_load.STUDY_PID_ENV, str(os.getppid()))
    assert machine_load.foreign_gpu_processes(0) == 1  # pid 1 is no part of the study; this process is
    shared = checks(row("01-amp", 1, ["amp"], 50.0, notes={"foreign_gpu_processes": 1}))
    assert "GPU" in shared and "1 other" in shared and "GPU" not in checks(row("01-amp", 1, ["amp"], 50.0))
