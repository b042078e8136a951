"""Faults while a study runs: each is recorded with its real cause, the ladder goes on, nothing
finished is lost, nothing hangs, and the exit code says what happened.

Stage passes are run in-process where the process boundary is not the point (a loader worker that
raises or is killed: ``study.stage.__main__.main`` is the stage process's own entry point); whole studies run
as real processes where it is (crashes, torchrun ranks, Ctrl-C, SIGKILL, --resume). Faults inside
those studies come from tests/inject/sitecustomize.py, put on the children's PYTHONPATH.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from study.core.config import RunConfig
from study.core.stage_plan import Plan
from study.core.stage_spec import StageSpec
from tests.util import REPO, stage_rows

INJECT = REPO / "tests" / "inject"
SECRET = "faultTestSecret-71b2-never-print-me"
KEY_ID = "FAULTTESTKEYID000001"
PLANTED = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": f"token-{SECRET}",
           "AWS_ENDPOINT_URL": f"http://{KEY_ID}:{SECRET}@127.0.0.1:9", "AWS_EC2_METADATA_DISABLED": "true"}
SMALL = ["--model", "tiny", "--batch-size", "8", "--subset", "64", "--val-subset", "16", "--val-steps", "1",
         "--warmup", "1", "--profile", "", "--no-pictures"]


def injection():
    """tests/inject/sitecustomize.py as a module (its faults, without installing its import hook)."""
    spec = importlib.util.spec_from_file_location("fault_injection", INJECT / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stage_spec(tmp: Path, num_workers: int = 0, **changes) -> Path:
    values = dict(model="tiny", batch_size=8, subset=64, val_subset=16, steps=4, val_steps=1, warmup=1, threads=1,
                  run_name="f", reports_root=str(tmp / "reports"), profiles_root=str(tmp / "profiles"))
    spec = StageSpec(index=0, name="00-base", stack=(), config=RunConfig(**{**values, **changes}),
                     plan=Plan(num_workers=num_workers))
    path = tmp / "stage.json"
    spec.save(path)
    return path


def run_worker(stage: Path, out: Path) -> dict:
    from study.stage.__main__ import main  # the stage process's entry point, called in this process

    assert main(["--stage", str(stage), "--pass", "timing", "--out", str(out)]) == 1
    return json.loads(out.read_text())


# --- one pass, in this process -------------------------------------------------------------------------


def test_a_loader_worker_that_raises_shows_its_exception_and_the_sample(synthetic_root: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copytree(synthetic_root / "imagenet", data / "imagenet")
    for image in (data / "imagenet" / "train").rglob("*.JPEG"):  # every one, so the first batch meets one
        image.write_bytes(image.read_bytes()[:200])
    payload = run_worker(stage_spec(tmp_path, data_root=str(data), dataset="imagefolder", image_size=32,
                                    num_workers=1), tmp_path / "out.json")
    error = payload["error"]
    assert "SampleError" in error and "in DataLoader worker process 0" in error, error
    assert ".JPEG) cannot be read: OSError" in error, error
    assert "\n" not in error and "Traceback" in payload["traceback"]


def test_a_loader_worker_killed_by_a_signal_is_named(synthetic_root: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import study.stage.session

    kill = injection().kill_in_loader_worker
    build = study.stage.session.build_session

    def build_session(spec):
        sess = build(spec)
        kill(sess.train_loader.dataset)
        return sess

    monkeypatch.setattr(study.stage.session, "build_session", build_session)
    payload = run_worker(stage_spec(tmp_path, data_root=str(synthetic_root), num_workers=1), tmp_path / "out.json")
    assert "DataLoader worker (pid " in payload["error"] and "was killed by SIGKILL" in payload["error"], payload


def test_a_stage_process_that_crashes_is_recorded_with_its_signal(tmp_path: Path) -> None:
    from study.core.child_process import run_child

    crash = "import os, signal; print('about to crash', flush=True); os.kill(os.getpid(), signal.SIGSEGV)"
    payload, error = run_child([sys.executable, "-c", crash], tmp_path / "x.log", tmp_path / "x.json")
    assert payload is None and error.startswith("killed by SIGSEGV") and "about to crash" in error, error


def test_the_rank_that_failed_first_is_the_cause(tmp_path: Path) -> None:
    from study.core.faults import rank_error_path, rank_errors, torchrun_root_cause

    out = tmp_path / "timing-r0.json"
    for rank, t, error in ((0, 2.0, "RuntimeError: Connection closed by peer"), (1, 1.0, "ValueError: bad batch"),
                           (2, 3.0, "RuntimeError: Connection closed by peer")):
        rank_error_path(out, rank).write_text(json.dumps({"error": error, "rank": rank, "time": t}))
    text = rank_errors(out, json.loads(out.read_text()))
    assert text.startswith("rank 1: ValueError: bad batch; then rank 0: ") and "rank 2" in text, text
    log = "\n".join(["Root Cause (first observed failure):", "[0]:", "  time      : 2026-01-01_00:00:00",
                     "  rank      : 1 (local_rank: 1)", "  exitcode  : -9 (pid: 123)", "  error_file: <N/A>",
                     "  traceback : Signal 9 (SIGKILL) received by PID 123", "=" * 20])
    assert torchrun_root_cause(log) == ("torchrun: rank 1 (local_rank: 1) failed, exitcode -9 (pid: 123) "
                                        "(Signal 9 (SIGKILL) received by PID 123)")


def test_a_stuck_rank_holds_the_others_ten_minutes_at_most(synthetic_root: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A rank that dies ends its stage through torchrun (the study test below); one that hangs is ended by
    the process group's collective timeout, which the session sets below gloo's default of 30 minutes."""
    import datetime

    import torch

    import study.stage.session

    class Stop(Exception):
        pass

    seen: dict = {}

    def init_process_group(**kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(torch.distributed, "init_process_group", init_process_group)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(Stop):
        study.stage.session.build_session(StageSpec.load(stage_spec(tmp_path, data_root=str(synthetic_root))))
    assert seen["backend"] == "gloo" and seen["timeout"] <= datetime.timedelta(minutes=10)


# --- whole studies, as real processes ------------------------------------------------------------------


def study_env(faults: str = "") -> dict[str, str]:
    env = dict(os.environ)
    env.update(PLANTED)
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{INJECT}"
    env["STUDY_TEST_FAULTS"] = faults
    env["COLUMNS"] = "200"
    return env


def start_study(cwd: Path, args: list[str], faults: str = "") -> subprocess.Popen:
    """The study as a terminal starts it: SIGINT at its default even where this suite was started in the
    background by a shell without job control (which starts its jobs with SIGINT ignored, and a process
    keeps an ignored SIGINT: the Ctrl-C below would do nothing)."""
    return subprocess.Popen([sys.executable, "-m", "study", *args], cwd=cwd, env=study_env(faults), text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc.returncode, out, err


def assert_no_secret(folder: Path, *texts: str) -> None:
    """Neither planted credential in any output text or in any file of the run (gzip opened)."""
    for text in texts:
        assert SECRET not in text and KEY_ID not in text
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if path.suffix == ".gz":
                data = gzip.decompress(data)
            assert SECRET.encode() not in data and KEY_ID.encode() not in data, path


def assert_whole_lines(run_dir: Path) -> None:
    for line in (run_dir / "results.jsonl").read_text().splitlines():
        json.loads(line)
    import csv

    for path in run_dir.rglob("*.csv"):
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        assert rows and all(len(r) == len(rows[0]) for r in rows), path


@pytest.mark.slow
def test_failed_stages_are_recorded_the_ladder_goes_on_and_the_study_exits_3(synthetic_root: Path,
                                                                            tmp_path: Path) -> None:
    """The baseline runs out of memory; the next stage (DDP, 2 ranks) loses rank 1. Both are recorded
    with their real errors, the second ran although the first failed, the DDP stage ended soon after
    rank 1 failed, the reports are written, and the exit code is 3 with one line per failed stage."""
    proc = start_study(tmp_path, [*SMALL, "--data-root", str(synthetic_root), "--run-name", "f", "--steps", "3",
                                  "--stack", "ddp=2"], faults="00-base=oom,01-ddp_2=rank1-raise")
    code, out, err = finish(proc)
    assert code == 3, err
    lines = [ln for ln in err.splitlines() if ln.startswith("study: ")]
    assert lines[0].startswith("study: stage 00-base failed: RuntimeError: ") and "can't allocate memory" in lines[0]
    assert "out of memory: lower --batch-size" in lines[0]
    log = Path(lines[0].rsplit("(log: ", 1)[1].rstrip(")"))  # where the whole traceback is
    assert log.name == "timing-r0.log" and "Traceback" in (tmp_path / log).read_text()
    # rank 0 fails too, after rank 1 left: the cause comes first
    assert lines[1].startswith("study: stage 01-ddp_2 failed: rank 1: RuntimeError: injected failure on rank 1"), lines
    assert len(lines) == 3 and "baseline" in lines[2], lines  # and a last line: nothing to compare with
    rows = {r["name"]: r for r in stage_rows(tmp_path, "f")}
    assert [rows[n]["status"] for n in ("00-base", "01-ddp_2")] == ["failed", "failed"]
    run_dir = tmp_path / "reports" / "f"
    # From rank 1's failure to the stage's end: torchrun's teardown, not the wait for a collective
    # timeout (10 min); measured from the failure, so the ranks' start-up on a slow machine is not in it.
    (rank1,) = (run_dir / "stages" / "01-ddp_2").glob("timing-r*.rank1.json")
    failed_at = json.loads(rank1.read_text())["time"]
    from study.stage.session import COLLECTIVE_TIMEOUT_MIN

    # ended by the teardown, long before a collective's timeout could have ended it
    assert 0 <= rows["01-ddp_2"]["finished"] - failed_at < COLLECTIVE_TIMEOUT_MIN * 60 / 2
    assert (run_dir / "stages.md").is_file() and "failed" in (run_dir / "stages.md").read_text()
    assert_whole_lines(run_dir)
    assert_no_secret(tmp_path, out, err)


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc; no psutil here)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def steps_done(progress: Path) -> int:
    try:
        return int(progress.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


@pytest.mark.slow
def test_ctrl_c_and_sigkill_lose_no_finished_stage_and_resume_completes(synthetic_root: Path, tmp_path: Path) -> None:
    """Stage 01 is slowed down so the study can be caught inside it. Ctrl-C (SIGINT to the study alone)
    stops its stage process and says how to resume (exit 130); then a resumed study is SIGKILLed, and
    its stage process dies with it; a last --resume finishes stage 01 from its checkpoint. The
    baseline ran once in all, every line of every record file is whole, no credential is anywhere."""
    args = [*SMALL, "--data-root", str(synthetic_root), "--run-name", "k", "--steps", "8", "--checkpoint-every", "2",
            "--stack", "channels_last"]
    faults = "01-channels_last=slow"
    run_dir = tmp_path / "reports" / "k"
    progress = run_dir / "stages" / "01-channels_last" / "timing-r0.progress"

    proc = start_study(tmp_path, args, faults)
    wait_for(lambda: steps_done(progress) >= 1 or proc.poll() is not None, 180, "stage 01 to train")
    (child,) = child_pids(proc.pid)
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc, timeout=60)
    assert code == 130, err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err, err
    assert not alive(child), "the stage process outlived the interrupted study"

    proc = start_study(tmp_path, [*args, "--resume"], faults)
    wait_for(lambda: steps_done(progress) >= 4 or proc.poll() is not None, 180, "stage 01 to train again")
    (child,) = child_pids(proc.pid)
    proc.kill()  # the study process alone: its stage process must not train on unwatched
    proc.wait()
    wait_for(lambda: not alive(child), 15, "the stage process to die with the study")
    assert (run_dir / "checkpoints" / "01-channels_last.pt").is_file()

    code, out2, err2 = finish(start_study(tmp_path, [*args, "--resume"], faults))
    assert code == 0, err2
    rows = stage_rows(tmp_path, "k")
    assert [r["name"] for r in rows] == ["00-base", "01-channels_last"], "the baseline ran again"
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    # 64 samples in batches of 8: the stage trains 8 steps in all, however often it was resumed
    assert rows[1]["notes"]["resumed_from_step"] >= 2 and rows[1]["steps_total"] == 8
    assert_whole_lines(run_dir)
    assert_no_secret(tmp_path, out, err, out2, err2)
