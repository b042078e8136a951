import json
import os

import pytest

from optimizations import workers as w
from optimizations.base import parse_stack
from study.core.stage_plan import Plan
from study.core.config import ConfigError
from tests.optimizations.helpers import cpu_env, make_session


def test_fixed_count_gives_persistent_prefetching_workers(tiny_cfg):
    sess = make_session(tiny_cfg, "workers=2")
    loader = sess.train_loader
    assert loader.num_workers == 2 and loader.persistent_workers and loader.prefetch_factor == w.PREFETCH_FACTOR
    assert sess.val_loader.num_workers == 2
    assert sess.notes["workers"].startswith("2 workers, persistent")
    x, y = next(iter(loader))  # the workers really produce batches
    assert x.shape[0] == tiny_cfg.batch_size


def test_workers_plan():
    cfg = w.workers_plan(Plan(), 3)
    assert (cfg.num_workers, cfg.persistent_workers, cfg.prefetch_factor) == (3, True, 2)
    cfg0 = w.workers_plan(cfg, 0)
    assert (cfg0.num_workers, cfg0.persistent_workers, cfg0.prefetch_factor) == (0, False, 0)


def test_candidate_counts_double_up_to_the_core_count():
    assert w.candidate_counts(1) == [0, 1]
    assert w.candidate_counts(2) == [0, 1, 2]
    assert w.candidate_counts(8) == [0, 1, 2, 4, 8]
    assert w.candidate_counts(6) == [0, 1, 2, 4, 6]


def test_knee_is_the_smallest_count_near_the_best():
    table = [{"workers": 0, "samples_per_s": 100.0}, {"workers": 1, "samples_per_s": 180.0},
             {"workers": 2, "samples_per_s": 300.0}, {"workers": 4, "samples_per_s": 320.0},
             {"workers": 8, "samples_per_s": 310.0}]
    assert w.pick_knee(table) == 2  # 300 is within 10% of 320
    assert w.pick_knee(table, tolerance=0.0) == 4
    assert w.pick_knee([{"workers": 0, "samples_per_s": 50.0}, {"workers": 1, "samples_per_s": 52.0}]) == 0


def test_bad_values():
    for bad in ("-3", "0", "two"):
        with pytest.raises(ConfigError):
            parse_stack(f"workers={bad}")


def test_sweep_measures_each_count(tiny_cfg):
    """A real data-only pass per count: one row each, in order, each timing `batches` whole batches;
    the count chosen is the knee of the very table it returns."""
    result = w.sweep_workers(tiny_cfg, counts=[0, 1], batches=2)
    table = result["table"]
    assert [r["workers"] for r in table] == [0, 1]
    for r in table:
        assert r["samples"] == 2 * tiny_cfg.batch_size and r["seconds"] > 0
        assert r["samples_per_s"] == pytest.approx(r["samples"] / r["seconds"], rel=1e-3)
    assert table[1]["startup_seconds"] > 0  # a worker process was started and waited for
    assert result["chosen"] == w.pick_knee(table)
    assert (result["key"], result["batch_size"], result["batches_per_count"]) == (w.sweep_key(tiny_cfg), 8, 2)


def test_sweep_takes_the_knee_not_the_fastest_count(tiny_cfg, monkeypatch):
    """The sweep's choice on a planted machine where 4 workers are fastest and 2 come within the
    tolerance: every count measured once, with the sweep's batch count, and 2 chosen."""
    planted = {0: 100.0, 1: 180.0, 2: 300.0, 4: 320.0}
    measured = []

    def measure_loader(cfg, dataset, workers, batches):
        measured.append((workers, batches, len(dataset)))
        return {"workers": workers, "samples_per_s": planted[workers], "samples": batches * cfg.batch_size,
                "seconds": 1.0, "startup_seconds": 0.0}

    monkeypatch.setattr(w, "measure_loader", measure_loader)
    result = w.sweep_workers(tiny_cfg, counts=[0, 1, 2, 4], batches=3)
    assert measured == [(0, 3, 64), (1, 3, 64), (2, 3, 64), (4, 3, 64)]  # the training subset, every count
    assert result["chosen"] == 2
    assert [r["samples_per_s"] for r in result["table"]] == [100.0, 180.0, 300.0, 320.0]


def test_auto_sweeps_once_records_the_table_and_reuses_it_on_resume(tiny_cfg, monkeypatch):
    calls = []
    fake = {"key": w.sweep_key(tiny_cfg), "table": [{"workers": 0, "samples_per_s": 10.0},
                                                     {"workers": 1, "samples_per_s": 40.0}], "chosen": 1}

    def sweep(which, job):
        calls.append(job)
        return fake

    from study.core import sweeps

    monkeypatch.setattr(sweeps, "measure_in_child", sweep)
    monkeypatch.setattr(sweeps, "_DONE", {})
    (toggle,) = parse_stack("workers=auto")
    assert toggle.configure(Plan(), tiny_cfg, cpu_env()).num_workers == 1
    assert toggle.configure(Plan(), tiny_cfg.replace(lr=0.1), cpu_env()).num_workers == 1  # a later stage: no new sweep
    assert len(calls) == 1
    saved = json.loads((tiny_cfg.report_dir / w.SWEEP_FILE).read_text())
    assert saved["chosen"] == 1 and len(saved["table"]) == 2

    monkeypatch.setattr(sweeps, "_DONE", {})  # a resumed study is a new process: only the file is left
    (again,) = parse_stack("workers=auto")  # a resumed study: same settings, no new measurement
    assert again.configure(Plan(), tiny_cfg.replace(resume=True), cpu_env()).num_workers == 1
    assert len(calls) == 1

    # the table travels to the stage in its plan (the stage spec), not through a side file
    (tiny_cfg.report_dir / w.SWEEP_FILE).unlink()
    from study.train.context import TrainContext

    ctx = TrainContext(cfg=tiny_cfg, env=cpu_env(), device="cpu", plan=toggle.configure(Plan(), tiny_cfg, cpu_env()))
    toggle.setup(ctx)
    assert ctx.notes["worker_sweep"] == [{"workers": 0, "samples_per_s": 10.0}, {"workers": 1, "samples_per_s": 40.0}]
    assert ctx.notes["workers"].startswith("auto → 1 workers")


@pytest.mark.slow  # two stage processes: the real sweep, and one that fails
def test_the_sweep_runs_in_a_stage_process_and_a_failed_one_is_one_line(tiny_cfg, tmp_path):
    from study.core import sweeps
    from study.core.config import ConfigError

    result = sweeps.measure_in_child(w.SWEEP, w.sweep_job(tiny_cfg))
    assert result["key"] == w.sweep_key(tiny_cfg) and result["chosen"] in [r["workers"] for r in result["table"]]
    assert [r["workers"] for r in result["table"]] == w.candidate_counts(os.cpu_count() or 1)
    assert all(r["samples_per_s"] > 0 for r in result["table"])
    gone = tiny_cfg.replace(data_root=str(tmp_path / "no-data-here"))
    with pytest.raises(ConfigError, match=r"workers=auto: the data-loader sweep failed .*e\.g\. workers=2"):
        sweeps.measure_in_child(w.SWEEP, w.sweep_job(gone))
