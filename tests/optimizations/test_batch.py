import json

import pytest

from optimizations import batch as b
import study.stage.sweeps as batch_sweep
from optimizations.base import parse_stack
from study.core.config import ConfigError
from study.core.stage_plan import Plan
from tests.optimizations.helpers import cpu_env, make_session


def test_fixed_size_trains_with_it(tiny_cfg):
    sess = make_session(tiny_cfg, "batch=16")
    x, _ = next(iter(sess.train_loader))
    assert x.shape[0] == 16 and tiny_cfg.batch_size == 8
    assert sess.spec.identity()["batch_size"] == 16  # what every row of the stage records
    assert sess.notes["batch"] == "16 per process (--batch-size 8)"
    assert [r.samples for r in sess.run_steps(2)] == [16, 16]


@pytest.mark.slow
def test_a_fixed_size_stage_row_records_it(toggle_stage):
    row, _ = toggle_stage("batch=16")  # a real stage, through the stage runner and its child process
    assert row.status == "ok", row.error
    assert row.batch_size == 16 and row.throughput > 0
    assert row.throughput == pytest.approx(16 / row.step_time_p50, rel=1e-6)  # every timed step took 16 samples


def test_accumulation_keeps_the_configs_batch_per_step(tiny_cfg):
    """batch=4:accumulate with --batch-size 8: batches of 4, two per optimizer step, so a step counts 8
    samples, the 64-sample subset makes 8 steps, and the loss still falls."""
    sess = make_session(tiny_cfg.replace(steps=0, warmup=0), "batch=4:accumulate")
    assert (sess.plan.stage_batch_size, sess.plan.accumulate_steps, sess.ctx.micro_batches) == (4, 2, 2)
    assert next(iter(sess.train_loader))[0].shape[0] == 4
    steps = sess.run_steps(8)
    assert [r.samples for r in steps] == [8] * 8
    assert steps[-1].loss < steps[0].loss
    assert sess.notes["batch"] == "4 x 2 accumulated per step = 8 (--batch-size)"
    with pytest.raises(ConfigError, match="must divide"):
        parse_stack("batch=3:accumulate")[0].configure(Plan(), tiny_cfg, cpu_env())
    with pytest.raises(ConfigError, match="must divide"):
        parse_stack("batch=16:accumulate")[0].configure(Plan(), tiny_cfg, cpu_env())


def test_an_accumulated_step_is_one_update_of_the_mean_gradient(tiny_cfg):
    """Each micro-batch's loss is divided by their count: the one update of a step of two batches of 4
    sees the gradient of their losses' mean, each batch through the model on its own (as BatchNorm
    sees it), which a twin of the model computes in one backward."""
    import copy

    import torch

    sess = make_session(tiny_cfg, "batch=4:accumulate")
    it = iter(sess.train_loader)
    two = [next(it), next(it)]
    sess.train_loader = two
    twin = copy.deepcopy(sess.state.base_model).train()
    updates = []
    sess.state.optimizer.step = lambda *a, **k: updates.append([p.grad.clone() for p in sess.state.base_model.parameters()])
    (step,) = sess.run_steps(1)
    assert step.samples == 8 and len(updates) == 1  # two batches make one step and one update
    task = sess.state.task
    mean = sum(task.loss(twin(x), y) for x, y in two) / 2
    mean.backward()
    for got, want in zip(updates[0], [p.grad for p in twin.parameters()]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_bad_values_exit_2_with_one_line(synthetic_root, tmp_path, capsys):
    from study.cli import main

    for bad, says in (("0", "at least 1"), ("y", "expected an integer"), ("x", "xK (K times --batch-size"),
                      ("x1", "K of 2 or more"), ("8:twice", "N:accumulate"), ("x2:accumulate", "cannot grow it")):
        code = main(["--model", "tiny", "--data-root", str(synthetic_root), "--reports-root", str(tmp_path / "r"),
                     "--profiles-root", str(tmp_path / "p"), "--stack", f"batch={bad}"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and says in err, (bad, err)


def test_a_multiple_of_the_configs_batch_is_what_the_search_tries(tiny_cfg):
    from optimizations.base import candidates
    from tests.optimizations.helpers import cuda_env

    assert parse_stack("batch=x2")[0].configure(Plan(), tiny_cfg, cpu_env()).stage_batch_size == 16
    assert parse_stack("batch=x4")[0].configure(Plan(), tiny_cfg.replace(batch_size=3), cpu_env()).stage_batch_size == 12
    # the search measures its candidates itself: no plan-time sweep per incumbent
    assert [c for c in candidates(cpu_env()) if c.startswith("batch")] == ["batch=x2"]
    assert [c for c in candidates(cuda_env()) if c.startswith("batch")] == ["batch=x2", "batch=x4"]


def test_candidates_and_halves():
    assert b.candidate_sizes(32, False) == [16, 32, 64, 128, 256]
    assert b.candidate_sizes(32, True) == [4, 8, 16, 32]  # divisors down to an eighth
    assert b.candidate_sizes(12, True) == [3, 6, 12]
    assert b.smaller_sizes(16, 32, False) == [8, 4, 2, 1]
    assert b.smaller_sizes(3, 12, True) == [1]


def test_sizes_the_stage_could_not_measure_are_not_candidates(tiny_cfg):
    # 64 samples, 3 steps, 1 warm-up: the config's 8 measures 2 steps; 32 (2 batches) would measure 1
    assert b.within_stage([4, 8, 16, 32, 64], 64, tiny_cfg, world=1, warmup=1) == [4, 8, 16]
    assert b.within_stage([4, 8, 16, 32, 64], 64, tiny_cfg, world=2, warmup=1) == [4, 8]  # each rank has 32


class PlantedMemory:
    """A planted peak for the size being tried, from a start of 100 MB, whatever the process holds."""

    def __init__(self, sess_ref, peak_of):
        self.sess_ref, self.peak_of, self.tried = sess_ref, peak_of, []

    def size(self):
        return self.sess_ref[0].ctx.plan.stage_batch_size

    def reset(self):
        self.tried.append(self.size())

    def current_mb(self):
        return 100.0

    def peak_mb(self):
        return self.peak_of(self.size())


def linear(size):
    return 100.0 + 10.0 * size


def planted_sweep(tiny_cfg, monkeypatch, budget_mb, peak_of=linear, **cfg_changes):
    """The sweep in this process, with the memory planted and the session it builds kept."""
    from study.stage import session as session_mod

    cfg = tiny_cfg.replace(**cfg_changes)
    job = b.sweep_job(Plan(), cfg, cpu_env(), accumulate=False, own_spec="batch=auto") | {"budget_mb": budget_mb,
                                                                                          "rounds": 2, "steps": 2}
    sess_ref = []
    real = session_mod.build_session
    monkeypatch.setattr(session_mod, "build_session", lambda spec: sess_ref.append(real(spec)) or sess_ref[-1])
    memory = PlantedMemory(sess_ref, peak_of)
    return batch_sweep.sweep_batch(job, memory=memory), memory


def test_a_size_over_the_budget_is_dropped_and_no_larger_one_tried(tiny_cfg, monkeypatch):
    """Batch 8 of the tiny config, 2 steps: 4, 8, 16 and 32 are candidates (64 would leave no measured
    step). Peaks of 100 MB + size² against 300 MB: 4 (116) and 8 (164) fit; 16 looks like 228 from 8's
    growth, so it is tried, peaks at 356 and is dropped; 32 is never tried."""
    result, memory = planted_sweep(tiny_cfg, monkeypatch, 300.0, peak_of=lambda size: 100.0 + size * size, steps=2)
    assert memory.tried == [4, 8, 16]
    table = {r["batch"]: r for r in result["table"]}
    assert sorted(table) == [4, 8, 16]
    assert not table[16]["fits"] and "356 MB over the budget of 300 MB" in table[16]["reason"]
    for size in (4, 8):
        r = table[size]
        assert r["fits"] and r["steps"] == 4 and r["peak_mb"] == 100 + size * size
        assert r["samples_per_s"] == pytest.approx(size / r["step_s"])
    assert result["chosen"] == max((4, 8), key=lambda s: table[s]["samples_per_s"])


def test_a_size_whose_extrapolated_peak_is_over_the_budget_is_not_started(tiny_cfg, monkeypatch):
    # 10 MB per sample: 4 peaks at 140, 8 at 180 as its growth foretold, 16 would reach 260 > 250
    result, memory = planted_sweep(tiny_cfg, monkeypatch, 250.0, steps=2)
    assert memory.tried == [4, 8]
    assert [r["batch"] for r in result["table"]] == [4, 8, 16]
    assert result["table"][2]["reason"].startswith("not tried: its peak would be about 260 MB")


def test_when_nothing_fits_halves_are_tried_down_to_one(tiny_cfg, monkeypatch):
    result, memory = planted_sweep(tiny_cfg, monkeypatch, 125.0)  # only 1 and 2 fit (110, 120 MB)
    assert memory.tried == [4, 2]  # 4 fails, its half fits: no 1
    assert result["chosen"] == 2 and [r["batch"] for r in result["table"]] == [2, 4]


@pytest.mark.parametrize("limit, tried, chosen_from", [(16, [4, 8, 16], (4, 8)), (4, [4, 2], (2,))])
def test_a_size_out_of_device_memory_is_dropped_and_no_larger_one_tried(tiny_cfg, monkeypatch, limit, tried, chosen_from):
    """As on CUDA (no budget, the device says when it is full): a step of `limit` samples or more runs
    out of memory. The sizes from `limit` up are not tried beyond the first; when that is the smallest
    candidate, its halves are tried until one fits."""
    import torch

    real_train, steps_of = batch_sweep.Size.train, []

    def train(self, stop):
        steps_of.append(self.size)
        if self.size >= limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_train(self, stop)

    monkeypatch.setattr(batch_sweep.Size, "train", train)
    result, _ = planted_sweep(tiny_cfg, monkeypatch, 0.0, steps=2)
    assert list(dict.fromkeys(steps_of)) == tried
    table = {r["batch"]: r for r in result["table"]}
    assert sorted(table) == sorted(tried) and table[limit] == {"batch": limit, "fits": False, "reason": "out of memory"}
    assert result["chosen"] in chosen_from and all(table[s]["fits"] for s in chosen_from)


def test_a_real_budget_below_the_process_fits_nothing(tiny_cfg):
    """The real resident memory of this process (torch alone is hundreds of MB) against 1 MB."""
    job = b.sweep_job(Plan(), tiny_cfg, cpu_env(), accumulate=False, own_spec="batch=auto") | {"budget_mb": 1.0}
    result = batch_sweep.sweep_batch(job)
    assert result["chosen"] == 0 and [r["batch"] for r in result["table"]] == [1, 2, 4]
    assert all(not r["fits"] and r["peak_mb"] > 1.0 for r in result["table"])


def test_auto_sweeps_once_and_the_table_travels_to_the_notes(tiny_cfg, monkeypatch):
    calls = []
    fake = {"table": [{"batch": 4, "accumulate": 1, "fits": True, "samples_per_s": 100.0, "peak_mb": 10.0},
                      {"batch": 8, "accumulate": 1, "fits": True, "samples_per_s": 150.0, "peak_mb": 12.0},
                      {"batch": 16, "fits": False, "reason": "out of memory"}], "chosen": 8}
    from study.core import sweeps

    monkeypatch.setattr(sweeps, "measure_in_child", lambda sweep, job: calls.append(job) or fake | {"key": job["key"]})
    monkeypatch.setattr(sweeps, "_DONE", {})
    (toggle,) = parse_stack("batch=auto")
    plan = toggle.configure(Plan(), tiny_cfg, cpu_env())
    assert plan.stage_batch_size == 8 and plan.batch_sweep["chosen"] == 8
    assert toggle.configure(Plan(), tiny_cfg, cpu_env()).stage_batch_size == 8 and len(calls) == 1
    assert json.loads((tiny_cfg.report_dir / b.SWEEP_FILE).read_text())["chosen"] == 8
    # the search plans the same stack again with a new toggle: this study's sweep, not a new one
    assert parse_stack("batch=auto")[0].configure(Plan(), tiny_cfg, cpu_env()).stage_batch_size == 8
    # a resumed study (a new process) reads batch_sweep.json when it measured the same settings
    monkeypatch.setattr(sweeps, "_DONE", {})
    assert parse_stack("batch=auto")[0].configure(Plan(), tiny_cfg.replace(resume=True), cpu_env()).stage_batch_size == 8
    assert len(calls) == 1
    parse_stack("batch=auto")[0].configure(Plan(), tiny_cfg.replace(resume=True, lr=0.5), cpu_env())
    assert len(calls) == 2  # other settings: measured again
    assert plan.hash() == Plan(stage_batch_size=8).hash()  # the table is evidence, not a setting
    from study.train.context import TrainContext

    ctx = TrainContext(cfg=tiny_cfg, env=cpu_env(), device="cpu", plan=plan)
    toggle.setup(ctx)
    assert ctx.notes["batch_sweep_chosen"] == 8 and ctx.notes["batch"].startswith("auto → 8 per process")
    assert ctx.notes["batch_sweep"][2] == {"batch": 16, "fits": False, "reason": "out of memory"}


@pytest.mark.slow
def test_auto_records_a_chosen_batch_and_its_sweep(toggle_stage):
    """A real stage of batch=auto on the tiny dry run (batch 32, 512 samples): the sweep in its child
    times 16, 32 and 64 (128 would leave the stage fewer than 3 measured steps); the stage trains with
    the size it chose and its row says so."""
    row, stage_dir = toggle_stage("batch=auto")
    assert row.status == "ok", row.error
    sweep = row.notes["batch_sweep"]
    assert [r["batch"] for r in sweep] == [16, 32, 64]
    assert all(r["samples_per_s"] > 0 and r["peak_mb"] > 0 for r in sweep)
    chosen = row.notes["batch_sweep_chosen"]
    assert chosen == max(sweep, key=lambda r: r["samples_per_s"])["batch"]
    assert row.batch_size == chosen and row.throughput == pytest.approx(chosen / row.step_time_p50, rel=1e-6)
    # the report's table comes from results.jsonl alone
    from study.report.reading import RunData
    from study.report.sections import batch_sweep

    (table,) = [rows for kind, rows in batch_sweep(RunData(stage_dir.parent.parent)).blocks if kind == "table"]
    assert [r["batch/process"] for r in table] == [16, 32, 64]
    assert [r["note"] for r in table].count("✓ chosen") == 1 and table[[16, 32, 64].index(chosen)]["note"] == "✓ chosen"


def test_the_sweep_trains_the_toggles_under_it_in_one_process(tiny_cfg):
    """Under batch=auto in the ladder: channels_last stays, ddp's launch is left out (its ranks each
    take the batch, per process), fused_optim comes after it; on a CPU each of ddp's 2 processes gets
    half the memory budget."""
    from optimizations.ddp import ddp_plan

    cfg = tiny_cfg.replace(stack=("channels_last", "ddp=2", "batch=auto", "fused_optim"))
    plan = ddp_plan(Plan(), cfg, cpu_env(), 2)
    job = b.sweep_job(plan, cfg, cpu_env(), accumulate=False, own_spec="batch=auto")
    alone = b.sweep_job(Plan(), cfg, cpu_env(), accumulate=False, own_spec="batch=auto")
    assert job["spec"]["stack"] == ["channels_last"] and job["spec"]["config"]["stack"] == ["channels_last"]
    assert (job["spec"]["plan"]["launcher"], job["spec"]["plan"]["world_size"], job["stage_world"]) == ("local", 1, 2)
    assert job["spec"]["plan"]["threads"] == plan.threads  # one rank's share of the cores
    assert job["budget_mb"] == pytest.approx(alone["budget_mb"] / 2, rel=0.05)


def test_a_stage_batch_larger_than_the_data_fails_with_that_reason(tiny_cfg):
    with pytest.raises(RuntimeError, match="64 training samples make no full step of 128 x 1"):
        make_session(tiny_cfg, "batch=128")


def test_a_config_file_may_not_set_the_stage_batch():
    from study.cli import refuse_plan_fields

    with pytest.raises(ConfigError, match="the batch toggle sets it"):
        refuse_plan_fields({"training": {"stage_batch_size": 64}})
    refuse_plan_fields({"batch_size": 64})  # the option itself stays an option
