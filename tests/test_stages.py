"""Planning the ladder: cumulative stacks, skipped toggles left out of later stages, leave-one-out."""
from optimizations.base import Env, load_all, parse_stack
from study.core.config import RunConfig
from study.core.stage_spec import worker_command
from study.runner.ladder import plan
from tests.util import table_rows

CPU = Env(device_type="cpu", cuda_count=0, cpu_count=2)


def _plan(stack, **kw):
    cfg = RunConfig(model="tiny", **kw)
    return plan(cfg, parse_stack(stack), CPU)


def test_ladder_is_cumulative_and_skips_what_does_not_apply():
    stages = _plan("workers=2,pin,channels_last")
    assert [s.spec.name for s in stages] == ["00-base", "01-workers_2", "02-pin", "03-channels_last"]
    assert [s.spec.stack for s in stages] == [(), ("workers=2",), ("workers=2",), ("workers=2", "channels_last")]
    assert [bool(s.skip_reason) for s in stages] == [False, False, True, False]
    assert "accelerator" in stages[2].skip_reason
    assert stages[1].spec.plan.num_workers == 2 and stages[0].spec.plan.num_workers == 0


def test_a_toggle_that_cannot_take_the_model_is_skipped_and_left_out_of_later_stages():
    from study.models.facts import ModelFacts

    tokens = ModelFacts(convolutions=0, input_shape=(64,), input_dtype="torch.int64")
    stages = plan(RunConfig(model="tiny"), parse_stack("channels_last,workers=2"), CPU, tokens)
    assert "does not apply to this model" in stages[1].skip_reason and "int64" in stages[1].skip_reason
    assert stages[2].spec.stack == ("workers=2",) and not stages[2].skip_reason
    images = ModelFacts(convolutions=3, input_shape=(3, 32, 32), input_dtype="torch.float32")
    assert not plan(RunConfig(model="tiny"), parse_stack("channels_last"), CPU, images)[1].skip_reason


def test_ablation_leaves_each_toggle_out_of_the_full_stack():
    stages = _plan("workers=2,channels_last,fused_optim", ablate=True)
    ablations = {s.spec.name: s.spec.stack for s in stages if s.spec.name.startswith("ablate")}
    assert ablations == {
        "ablate-no-workers_2": ("channels_last", "fused_optim"),
        "ablate-no-channels_last": ("workers=2", "fused_optim"),
        "ablate-no-fused_optim": ("workers=2", "channels_last"),
    }
    assert len({s.spec.index for s in stages}) == len(stages)


def test_ddp_stage_launches_through_torchrun(tmp_path):
    st = _plan("ddp=2")[1]
    cmd = worker_command(st.spec, tmp_path / "s.json", "timing", 0, tmp_path / "o.json")
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--nproc-per-node=2" in cmd and "--standalone" in cmd
    multi = _plan("ddp=2", nnodes=2, node_rank=1, rdzv_endpoint="127.0.0.1:29400")[1]
    cmd = worker_command(multi.spec, tmp_path / "s.json", "timing", 0, tmp_path / "o.json")
    assert "--nnodes=2" in cmd and "--node-rank=1" in cmd and "--rdzv-endpoint=127.0.0.1:29400" in cmd


def test_list_shows_every_toggle_and_its_applicability(capsys):
    from study.cli import main

    assert main(["list", "--device", "cpu"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert set(rows) == set(load_all())  # every toggle, each on its own row, nothing else
    applies = {name: cells[2] for name, cells in rows.items()}
    assert applies["pin"].startswith("no: ") and applies["cudnn"].startswith("no: ")
    assert applies["dp"].startswith("no: ") and "2" in applies["dp"]  # not hidden inside ddp's row
    for name in ("ddp", "hogwild", "workers", "channels_last", "fused_optim", "compile"):
        assert applies[name] == "yes", (name, applies[name])
    assert applies["script"].startswith("yes, but") and "compile" in applies["script"]  # deprecated here
    from optimizations.amp import Amp

    emulated, native = (Env(device_type="cpu", cuda_count=0, cpu_count=2, bf16_native=b) for b in (False, True))
    assert "emulated" in Amp("bf16").caveat(emulated) and Amp("bf16").caveat(native) == ""
    conflicts = {name: set(cells[3].split(", ")) - {"\u2013"} for name, cells in rows.items()}
    assert conflicts["ddp"] == {"dp", "hogwild"} and conflicts["script"] == {"compile"}
    for name, others in conflicts.items():  # declared once, shown on both sides
        assert all(name in conflicts[o] for o in others), (name, others)


def planted_runner(tmp_path, monkeypatch, stack, fails=lambda stack, r: False, **cfg):
    """A StageRunner whose timing runs are planted rows (no child process): `fails(stack, repeat)` says
    which fail. Returns (runner, the runs in the order they were timed, the warnings)."""
    from study.core.records import StageResult
    from study.runner.ladder import StageRunner

    cfg = RunConfig(model="tiny", reports_root=str(tmp_path / "reports"), profiles_root=str(tmp_path / "profiles"),
                    profile=(), **cfg)
    runner = StageRunner(cfg, parse_stack(stack), CPU)
    ran, warnings = [], []

    def timed_run(st, r):
        ran.append((st.spec.name, r, st.spec.stack))
        failed = fails(st.spec.stack, r)
        row = StageResult(**st.spec.identity(), kind="repeat", repeat=r, repeats=cfg.repeats,
                          status="failed" if failed else "ok", error="RuntimeError: planted" if failed else "",
                          throughput=100.0 + st.spec.index + r)
        runner.recorder.add(row)
        return row

    monkeypatch.setattr(runner, "timed_run", timed_run)
    monkeypatch.setattr(runner, "run_pictures", lambda results: None)
    runner.on_warning = warnings.append
    return runner, ran, warnings


def test_a_toggle_whose_stage_fails_at_run_time_is_left_out_of_the_later_stages(tmp_path, monkeypatch):
    """fused_optim's stage fails as it runs (planned fine): the stages after it run without it, each
    still adding its own toggle, and the user is told once; the failed stage keeps its own row."""
    runner, ran, warnings = planted_runner(tmp_path, monkeypatch, "workers=2,fused_optim,channels_last",
                                           lambda stack, r: "fused_optim" in stack[-1:], ablate=True)
    results = runner.run()
    assert [(name, stack) for name, _, stack in ran] == [
        ("00-base", ()), ("01-workers_2", ("workers=2",)), ("02-fused_optim", ("workers=2", "fused_optim")),
        ("03-channels_last", ("workers=2", "channels_last")),
        ("ablate-no-workers_2", ("channels_last",)), ("ablate-no-channels_last", ("workers=2",))]
    assert [r.status for r in results] == ["ok", "ok", "failed", "ok", "ok", "ok"]
    assert len(warnings) == 1 and "fused_optim" in warnings[0] and "02-fused_optim" in warnings[0]


def test_stages_are_timed_in_interleaved_rounds_and_profiled_after(tmp_path, monkeypatch):
    """Round r times repeat r of every stage before any stage's repeat r+1; a stage that fails in its
    first run is not timed again; each stage's row keeps its runs' samples/s in round order."""
    runner, ran, _ = planted_runner(tmp_path, monkeypatch, "workers=2,pin,fused_optim",
                                    lambda stack, r: stack[-1:] == ("fused_optim",), repeats=3)
    profiled = []
    monkeypatch.setattr(runner, "run_profiles", lambda st, f, d: profiled.append((st.spec.name, len(ran))) or {})
    results = runner.run()
    assert [(name, r) for name, r, _ in ran] == [("00-base", 0), ("01-workers_2", 0), ("03-fused_optim", 0),
                                                 ("01-workers_2", 1), ("00-base", 1),  # odd rounds: backwards
                                                 ("00-base", 2), ("01-workers_2", 2)]
    assert [r.status for r in results] == ["ok", "ok", "skipped", "failed"]  # pin: no accelerator here
    assert profiled == [("00-base", 7), ("01-workers_2", 7)]  # after every timing run of every stage
    assert results[1].notes["repeat_samples_per_s"] == [101.0, 102.0, 103.0]


def test_a_resumed_study_keeps_the_runs_it_finished_and_times_only_the_rest(tmp_path, monkeypatch):
    """Killed in round 1 (after the baseline's repeat 1): the resumed study reuses the four finished
    runs and times the two left, each stage then closed with all three."""
    runner, ran, _ = planted_runner(tmp_path, monkeypatch, "workers=2", repeats=3)
    monkeypatch.setattr(runner, "run_profiles", lambda st, f, d: {})
    for st, r in [(0, 0), (1, 0), (0, 1)]:
        runner.timed_run(runner.stages[st], r)
    ran.clear()
    resumed, ran_again, _ = planted_runner(tmp_path, monkeypatch, "workers=2", repeats=3, resume=True)
    monkeypatch.setattr(resumed, "run_profiles", lambda st, f, d: {})
    results = resumed.run()
    assert [(name, r) for name, r, _ in ran_again] == [("01-workers_2", 1), ("00-base", 2), ("01-workers_2", 2)]
    # (round 1 runs backwards, and its finished 00-base run is kept: only 01's is timed)
    assert [r.notes["repeat_samples_per_s"] for r in results] == [[100.0, 101.0, 102.0], [101.0, 102.0, 103.0]]


def test_a_busy_run_measured_again_keeps_one_attempt_for_its_row_its_records_and_its_curves(tmp_path, monkeypatch):
    """Three attempts of one timing run on a busy machine (others at 60 %, 30 % and 40 %: the quietest
    is the second): the stage's records-r0.csv and its TensorBoard files are the second attempt's, as
    its row is; the other attempts' curves move aside."""
    from study.core.records import StageResult
    from study.runner.ladder import StageRunner

    cfg = RunConfig(model="tiny", reports_root=str(tmp_path / "reports"), profiles_root=str(tmp_path / "profiles"),
                    profile=(), busy_retries=2)
    runner = StageRunner(cfg, [], CPU)
    st = runner.stages[0]
    shares = iter([0.6, 0.3, 0.4])

    def run_pass(spec, stage_file, pass_name, repeat, out, log, **watch):
        attempt = len(list(spec.profile_dir.glob("**/events.out.tfevents.*")))
        spec.profile_dir.mkdir(parents=True, exist_ok=True)
        (spec.profile_dir / f"events.out.tfevents.{attempt}").write_text(f"curve of attempt {attempt}")
        (spec.report_dir / "records-r0.csv").write_text(f"records of attempt {attempt}\n")
        row = StageResult(**spec.identity(), kind="repeat", repeat=0, throughput=100.0 + attempt,
                          foreign_cpu_share=next(shares))
        return row.__dict__, ""

    monkeypatch.setattr(runner, "run_pass", run_pass)
    kept = runner.timed_run(st, 0)
    assert kept.throughput == 101.0 and kept.foreign_cpu_share == 0.3
    assert (st.spec.report_dir / "records-r0.csv").read_text() == "records of attempt 1\n"
    assert [p.read_text() for p in st.spec.profile_dir.glob("events.out.tfevents.*")] == ["curve of attempt 1"]
    aside = sorted(p.read_text() for p in (st.spec.profile_dir / "busy-attempts").glob("*/events.out.tfevents.*"))
    assert aside == ["curve of attempt 0", "curve of attempt 2"]
    rows = [r for r in runner.recorder.rows() if r.kind == "repeat"]
    assert [r.notes.get("attempt", 0) for r in rows] == [0, 1, 2]  # every attempt is a row
