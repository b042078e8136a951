"""Pictures at the end of a run: the pass on a trained checkpoint, TensorBoard, the report section,
summary.html as one file, and the workers=auto sweep as the toggle really writes it."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from study.pictures import PICTURES_FILE
from study.pictures.make import run as pictures_pass
from study.report import build_report
from tests.report.helpers import make_run
from tests.trained import assert_picture, trained_stage


def image_tags(logdir: Path) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"images": 0})
    acc.Reload()
    return acc.Tags()["images"]


def report_with(tmp_path: Path, payload: dict, pngs_from: Path) -> Path:
    """A finished run's folder (fixture rows) holding the pass's pictures.json and PNGs."""
    run = make_run(tmp_path, "fx")
    (run / PICTURES_FILE).write_text(json.dumps(payload))
    for name in payload["files"].values():
        (run / name).write_bytes((pngs_from / name).read_bytes())
    build_report([run], print_tables=False)
    return run


def test_classification_pictures_confusion_matrix_cam_grid_and_tensorboard(synthetic_root, tmp_path):
    spec = trained_stage(synthetic_root, tmp_path / "study", "classify")
    payload = pictures_pass(spec)
    out = spec.config.report_dir
    assert payload["stage"] == "00-base" and payload["task"] == "classify" and payload["trained_steps"] == 12
    assert set(payload["files"]) == {"confusion_matrix", "cam_grid"}
    assert_picture(out / "confusion_matrix.png", min_side=400)
    grid = assert_picture(out / "cam_grid.png", min_side=300)
    assert grid.size[0] > grid.size[1]  # 8 pictures side by side, picture above its CAM
    # the matrix counts the validation batches the metric used: --val-steps 2 of 16, not all 40 pictures
    assert payload["images"] == 32 and sum(map(sum, payload["confusion"])) == 32
    assert sum(c["images"] for c in payload["per_class"]) == 32
    assert 0.0 <= payload["top1"] <= 1.0 and len(payload["per_class"]) == 10
    assert sorted(image_tags(spec.profile_dir)) == ["pictures/cam_grid", "pictures/confusion_matrix"]

    run = report_with(tmp_path, payload, out)
    md = (run / "summary.md").read_text()
    assert "## Predictions of the last stage (00-base)" in md
    assert "![confusion matrix](confusion_matrix.png)" in md and "(cam_grid.png)" in md
    assert "| class | images | recall | precision |" in md
    assert "| airplane |" in md


def test_segmentation_pictures_grid_and_per_class_iou(synthetic_root, tmp_path):
    spec = trained_stage(synthetic_root, tmp_path / "study", "segment")
    payload = pictures_pass(spec)
    out = spec.config.report_dir
    assert set(payload["files"]) == {"segmentation_grid", "confusion_matrix"}
    grid = assert_picture(out / "segmentation_grid.png", min_side=300)
    assert grid.size[1] > grid.size[0]  # one row per picture: image | trimap | prediction | overlay
    assert_picture(out / "confusion_matrix.png", min_side=300)
    assert [c["class"] for c in payload["per_class"]] == ["background", "pet"]
    ious = [c["iou"] for c in payload["per_class"] if c["iou"] is not None]
    assert ious and payload["miou"] == pytest.approx(sum(ious) / len(ious))
    # pixels of the 2 validation batches of 4 pictures at 32 px, border pixels left out
    assert 0 < sum(c["true_pixels"] for c in payload["per_class"]) <= 8 * 32 * 32
    assert sorted(image_tags(spec.profile_dir)) == ["pictures/confusion_matrix", "pictures/segmentation_grid"]

    run = report_with(tmp_path, payload, out)
    md = (run / "summary.md").read_text()
    assert "| class | IoU | true pixels | predicted pixels |" in md
    assert re.search(r"\| pet \| \d\.\d{3} \| \d+ \| \d+ \|", md), md
    assert "(segmentation_grid.png)" in md


def test_summary_html_is_one_file_with_every_picture_inlined(synthetic_root, tmp_path):
    spec = trained_stage(synthetic_root, tmp_path / "study", "classify", steps=2)
    run = report_with(tmp_path, pictures_pass(spec), spec.config.report_dir)
    html = (run / "summary.html").read_text()
    pngs = sorted(p.name for p in run.glob("*.png"))
    assert {"cam_grid.png", "confusion_matrix.png", "throughput.png"} <= set(pngs)
    srcs = re.findall(r"<img src='([^']*)'", html)
    assert len(srcs) == len(pngs)  # every picture the report drew is on the page
    assert all(s.startswith("data:image/png;base64,") for s in srcs)  # none needs a file beside it


def test_the_runner_draws_the_last_ok_ladder_stage_in_one_plain_process(tmp_path, monkeypatch):
    """Not an ablation stage, not a failed one; one process even for DDP; an error is kept, not raised."""
    from optimizations.base import parse_stack
    import study.runner.ladder as stages
    from study.core.stage_plan import Plan
    from study.core.config import RunConfig
    from study.core.records import StageResult
    from tests.optimizations.helpers import cpu_env

    cfg = RunConfig(model="tiny", run_name="r", reports_root=str(tmp_path / "reports"),
                    profiles_root=str(tmp_path / "profiles"), ablate=True)
    runner = stages.StageRunner(cfg, parse_stack("channels_last,ddp=2,amp=bf16"), cpu_env())
    names = [st.spec.name for st in runner.stages]
    assert names[:4] == ["00-base", "01-channels_last", "02-ddp_2", "03-amp_bf16"] and names[4].startswith("ablate-")
    for st in runner.stages:
        st.spec.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        st.spec.checkpoint_path.write_bytes(b"")
    status = {"03-amp_bf16": "failed"}
    results = [StageResult(run="r", stage=i, name=n, status=status.get(n, "ok")) for i, n in enumerate(names)]
    calls, answer = [], [({"stage": "02-ddp_2", "files": {}}, "")]
    monkeypatch.setattr(stages, "run_child", lambda cmd, log, out: calls.append(cmd) or answer[0])
    warnings: list[str] = []
    runner.on_warning = warnings.append

    runner.run_pictures(results)
    (cmd,) = calls
    assert cmd[cmd.index("--pass") + 1] == "pictures" and "torch.distributed.run" not in cmd
    assert "02-ddp_2" in cmd[cmd.index("--stage") + 1]
    target = cfg.report_dir / PICTURES_FILE
    assert json.loads(target.read_text())["stage"] == "02-ddp_2" and not warnings

    answer[0] = (None, "exit code 1: CUDA out of memory")
    runner.run_pictures(results)
    assert json.loads(target.read_text()) == {"stage": "02-ddp_2", "error": "exit code 1: CUDA out of memory"}
    assert warnings and "out of memory" in warnings[0]

    runner.run_pictures([StageResult(run="r", stage=i, name=n, status="failed") for i, n in enumerate(names)])
    assert not target.exists() and len(calls) == 2  # no stale pictures from an earlier run


def test_a_failed_pictures_pass_is_said_in_the_report(tmp_path):
    run = make_run(tmp_path, "fx")
    (run / PICTURES_FILE).write_text(json.dumps({"stage": "02-pin", "error": "exit code 1: out of memory"}))
    build_report([run], print_tables=False)
    md = (run / "summary.md").read_text()
    said = next(line for line in md.splitlines() if "02-pin" in line and "pictures" in line)
    assert "exit code 1: out of memory" in said  # the stage, and the planted error as it was


def test_a_real_worker_sweep_shows_in_the_report(synthetic_root, tmp_path, monkeypatch):
    """workers=auto's own output (sweep_workers → load_or_sweep's file, setup's stage notes) through the report."""
    from optimizations import workers as w
    from optimizations.base import TrainContext, parse_stack
    from study.core.stage_plan import Plan
    from tests.optimizations.helpers import cpu_env, tiny_config
    from tests.report.helpers import read_rows, write_rows

    run = make_run(tmp_path, "fx")
    cfg = tiny_config(synthetic_root, tmp_path, run_name="fx")
    from study.core import sweeps
    from study.core.config import RunConfig

    monkeypatch.setattr(sweeps, "_DONE", {})
    monkeypatch.setattr(sweeps, "measure_in_child",
                        lambda sweep, job: w.sweep_workers(RunConfig.from_dict(job["config"]), counts=[0, 1], batches=2))
    (toggle,) = parse_stack("workers=auto")
    plan = toggle.configure(Plan(), cfg, cpu_env())
    chosen = plan.num_workers
    saved = json.loads((run / w.SWEEP_FILE).read_text())
    assert isinstance(saved, dict) and saved["chosen"] == chosen  # the shape the report has to read

    build_report([run], print_tables=False)
    md = (run / "summary.md").read_text()
    assert "## DataLoader worker sweep" in md
    for row in saved["table"]:
        mark = "✓" if row["workers"] == chosen else ""
        assert f"| {row['workers']} | {row['samples_per_s']:.1f} | {row['startup_seconds']:.2f} | {mark} |" in md
    assert_picture(run / "worker_sweep.png", min_side=300)

    # results.jsonl alone: the stage notes that setup() writes carry the same sweep
    ctx = TrainContext(cfg=cfg.replace(stack=("workers=auto",)), env=cpu_env(), device=None, plan=plan)
    toggle.setup(ctx)
    rows = read_rows(run)
    for r in rows:
        if r["kind"] == "stage" and r["name"] == "01-workers_2":
            r["notes"] = {**r.get("notes", {}), **ctx.notes}
    write_rows(run, rows)
    (run / w.SWEEP_FILE).unlink()
    (run / "worker_sweep.png").unlink()
    build_report([run], print_tables=False)
    md = (run / "summary.md").read_text()
    assert "## DataLoader worker sweep" in md and "✓" in md
    assert (run / "worker_sweep.png").is_file()


@pytest.mark.slow
def test_a_dry_run_ends_with_pictures_a_sweep_and_a_usable_checkpoint(tiny_dry_run, tmp_path):
    """The whole way (the session's dry run, tests/conftest.py): the ladder, the pictures pass on its
    last stage, the report, then predict."""
    from tests.trained import synthetic_picture
    from tests.util import run_study

    cwd, p = tiny_dry_run.cwd, tiny_dry_run.proc
    assert p.returncode == 0, p.stderr[-3000:]
    run = cwd / "reports" / tiny_dry_run.run
    payload = json.loads((run / PICTURES_FILE).read_text())
    assert payload["stage"] == "01-workers_auto" and "error" not in payload
    for name in ("confusion_matrix.png", "cam_grid.png", "worker_sweep.png"):
        assert_picture(run / name, min_side=300)
    md = (run / "summary.md").read_text()
    assert "## Predictions of the last stage (01-workers_auto)" in md and "## DataLoader worker sweep" in md
    html = (run / "summary.html").read_text()
    assert "<img src='data:image/png;base64," in html and not re.search(r"<img src='(?!data:)", html)
    assert "pictures/cam_grid" in image_tags(cwd / "profiles" / tiny_dry_run.run / "01-workers_auto")

    img = synthetic_picture(tmp_path / "cat.png", 3)
    checkpoint = cwd / payload["checkpoint"]  # as the pictures pass wrote it, from the study's folder
    p = run_study("predict", str(img), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "predictions"),
                  cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "cat.png: top-5" in p.stdout
    assert_picture(tmp_path / "predictions" / "cat.cam.png", min_side=300)
