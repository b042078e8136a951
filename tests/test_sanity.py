"""The sanity check: a healthy pipeline overfits one batch; each planted bug (labels outside the
classes, a loss that ignores the model's output, frozen parameters, a transform that destroys the
signal) fails it with its own one-line reason; the row, the console line, the report and the exit
code say so."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from study.core import sanity
from study.core.config import RunConfig
from study.core.records import StageResult, read_results
from study.core.recorder import append_jsonl
from study.report.ladder import checks
from study.core.stage_spec import StageSpec
from tests.util import REPO, results, run_study


# --- judging a curve (pure) ------------------------------------------------------------------------

def test_a_curve_that_falls_with_the_batch_learned_passes():
    j = sanity.judge([2.31, 1.2, 0.05], [0.1, 0.6, 1.0], batch=16)
    assert j.passed and j.reason == "loss 2.31 → 0.05 on one batch of 16 in 3 steps, accuracy 1.00"


@pytest.mark.parametrize("losses, accs, words", [
    ([2.3, 2.2, 2.1], [0.1, 0.2, 0.2], "must fall below half its start (1.15)"),
    ([2.3, 1.0, 0.5], [0.1, 0.3, 0.4], "accuracy 0.40 on the batch"),
    ([2.3, float("nan")], [0.1, 0.1], "the loss became nan at step 2"),
    ([], [], "no training step ran"),
])
def test_a_curve_that_does_not_learn_fails_with_its_figures(losses, accs, words):
    j = sanity.judge(losses, accs, batch=16)
    assert not j.passed and words in j.reason and "\n" not in j.reason


def test_a_task_without_accuracy_is_judged_by_its_loss():
    assert sanity.judge([5.0, 1.0], [None, None], batch=8, accuracy_name="").passed


def test_a_problem_found_beside_the_curve_comes_first():
    j = sanity.judge([2.3, 2.3], [0.1, 0.1], batch=16, problem="labels outside the 10 classes")
    assert not j.passed and j.reason.startswith("labels outside the 10 classes (loss 2.30 → 2.30")


def test_the_reasons_name_each_bug():
    assert "12, 15" in sanity.label_problem([0, 3, 12, 15], 10)
    assert sanity.label_problem([0, 1, 255], 2, ignore_index=255) == ""
    assert "identical" in sanity.input_problem(16, 1, True)
    assert "NaN" in sanity.input_problem(16, 16, False)
    assert "frozen" in sanity.parameter_problem(0, 0)
    assert "optimizer holds none" in sanity.parameter_problem(10, 0)
    assert "does not depend on the model's output" in sanity.gradient_problem(True, 0, 10, 0)
    assert "does not update them" in sanity.gradient_problem(True, 10, 10, 0)
    assert sanity.gradient_problem(True, 10, 10, 10) == ""


def test_the_line_and_the_row():
    ident = dict(run="r", stage=0, name="00-base", config_hash="abc")
    ok = sanity.result_row(ident, {"passed": True, "reason": "loss 2.31 → 0.05 on one batch of 16 in 40 steps",
                                   "optimizer": "SGD lr 0.01", "losses": [2.31, 0.05], "accuracies": [0.1, 1.0]}, "", 0.0)
    assert ok.kind == "sanity" and ok.status == "ok" and ok.first_loss == 2.31 and ok.final_loss == 0.05
    assert sanity.line(ok) == ("Sanity check: the pipeline learns (loss 2.31 → 0.05 on one batch of 16 in 40 steps; "
                               "SGD lr 0.01).")
    bad = sanity.result_row(ident, {"passed": False, "reason": "labels outside", "losses": []}, "", 0.0)
    assert bad.status == "failed" and sanity.passed(bad) is False
    assert sanity.line(bad).endswith("did not learn one batch: labels outside; fix it before a long run.")
    crashed = sanity.result_row(ident, None, "ConfigError: no data", 0.0)
    assert sanity.passed(crashed) is False and "could not run: ConfigError: no data" in sanity.line(crashed)
    assert sanity.passed(None) is None and sanity.line(None) == ""


def test_a_check_of_another_config_is_not_this_runs():
    check = StageResult(run="r", stage=0, name="sanity", kind="sanity", config_hash="old", notes={"sanity": {}})
    base = StageResult(run="r", stage=0, name="00-base", kind="stage", config_hash="new")
    assert sanity.latest([check]) is check
    assert sanity.latest([check, base]) is None
    assert sanity.latest([check, StageResult(**{**base.__dict__, "config_hash": "old"})]) is check


def test_the_ladder_flags_a_stage_whose_loss_rose():
    row = StageResult(run="r", stage=0, name="00-base", steps_measured=20, first_loss=2.3, final_loss=10.58)
    assert "loss rose 2.30 → 10.58" in checks(row)
    assert "loss" not in checks(StageResult(run="r", stage=0, name="00-base", steps_measured=20, first_loss=2.3,
                                            final_loss=1.0))
    assert "loss" not in checks(StageResult(run="r", stage=0, name="00-base", steps_measured=20, final_loss=9.0))


def test_old_rows_without_first_loss_still_load(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"run": "r", "stage": 0, "name": "00-base", "final_loss": 1.5}) + "\n")
    (row,) = read_results(path)
    assert row.first_loss == 0.0 and row.final_loss == 1.5


# --- the pass on the tiny model, bugs planted in-process ---------------------------------------------

def session(root, tmp_path, **kw):
    from study.stage.session import build_session

    kw = {"batch_size": 16, "subset": 256, "val_subset": 32, **kw}
    cfg = RunConfig(model="tiny", data_root=str(root), reports_root=str(tmp_path / "reports"),
                    profiles_root=str(tmp_path / "profiles"), **kw)
    return build_session(StageSpec(index=0, name="00-base", stack=(), config=cfg))


def check(sess, batch=None, **kw):
    from study.stage.sanity_pass import check as run_check

    return run_check(sess.state, batch or next(iter(sess.train_loader)), sess.bundle.num_classes, **kw)


def failed_with(payload: dict, words: str) -> None:
    assert payload["passed"] is False, payload
    assert words in payload["reason"] and "\n" not in payload["reason"], payload["reason"]


def test_a_healthy_pipeline_overfits_one_batch(synthetic_root, tmp_path):
    got = check(session(synthetic_root, tmp_path))
    assert got["passed"], got["reason"]
    assert got["losses"][-1] < 0.5 * got["losses"][0] and got["accuracies"][-1] >= 0.9
    assert got["steps"] <= sanity.MAX_STEPS and got["batch"] == 16
    assert abs(got["losses"][0] - math.log(10)) < 0.3  # an untrained classifier starts near ln(classes)
    assert got["optimizer"] == "SGD lr 0.01 momentum 0.9"  # the stage's own optimizer, not a stronger one


def test_segmentation_learns_its_pixels(synthetic_root, tmp_path):
    got = check(session(synthetic_root, tmp_path, task="segment", image_size=32, batch_size=4))
    assert got["passed"], got["reason"]
    assert got["accuracy_name"] == "pixel accuracy" and got["accuracies"][-1] >= 0.9


def test_labels_outside_the_classes_fail(synthetic_root, tmp_path):
    sess = session(synthetic_root, tmp_path)
    x, y = next(iter(sess.train_loader))
    got = check(sess, (x, y + 5))  # an off-by-five label mapping: 5..14 for 10 classes
    outside = ", ".join(str(v) for v in sorted(set((y + 5).tolist())) if v >= 10)
    failed_with(got, f"labels outside the 10 classes in the batch: {outside} (the model's classes are 0..9)")
    assert got["steps"] == 0  # found before any step


class IgnoresOutput(nn.Module):
    """A loss computed from a stand-in for the output: it never reaches the model."""

    def __init__(self, task) -> None:
        super().__init__()
        self.task = task

    def loss(self, output, target):
        return self.task.loss(torch.zeros_like(output, requires_grad=True), target)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.task, name)


def test_a_loss_that_ignores_its_input_fails(synthetic_root, tmp_path):
    sess = session(synthetic_root, tmp_path)
    sess.state.task = IgnoresOutput(sess.state.task)
    failed_with(check(sess, max_steps=10), "the loss does not depend on the model's output")


def test_a_detached_loss_fails(synthetic_root, tmp_path):
    sess = session(synthetic_root, tmp_path)
    task = sess.state.task
    sess.state.task = type("Detached", (), {"loss": lambda self, out, y: task.loss(out.detach(), y),
                                            "__getattr__": lambda self, name: getattr(task, name)})()
    failed_with(check(sess, max_steps=10), "the loss does not depend on the model's output")


def test_frozen_parameters_fail(synthetic_root, tmp_path):
    sess = session(synthetic_root, tmp_path)
    sess.state.base_model.requires_grad_(False)  # frozen after the optimizer was built
    failed_with(check(sess), "every parameter of the model is frozen")


def test_an_optimizer_of_another_model_fails(synthetic_root, tmp_path):
    sess = session(synthetic_root, tmp_path)
    other = copy.deepcopy(sess.state.base_model)
    sess.state.optimizer = torch.optim.SGD(other.parameters(), lr=0.01, momentum=0.9)
    failed_with(check(sess), "the optimizer holds none of the model's trainable parameters")


def test_a_transform_that_destroys_the_signal_fails(synthetic_root, tmp_path):
    from torchvision import transforms as T

    sess = session(synthetic_root, tmp_path)
    data = getattr(sess.bundle.train, "dataset", sess.bundle.train)  # under the --subset
    data.transform = T.Compose([data.transform, T.Lambda(lambda x: x * 0)])
    failed_with(check(sess), "all 16 inputs of the batch are identical: the transform destroys the signal")


def test_a_learning_rate_too_small_to_learn_fails_on_the_curve(synthetic_root, tmp_path):
    got = check(session(synthetic_root, tmp_path, lr=1e-6), max_steps=12)
    failed_with(got, "the loss must fall below half its start")
    assert got["steps"] == 12 and got["reason"].startswith("loss 2.") and "--lr too small" in got["reason"]


# --- through the CLI -------------------------------------------------------------------------------

def test_a_dry_run_checks_that_the_pipeline_learns(tiny_dry_run):
    """The session's dry run (tests/conftest.py), as a user typed it."""
    p, cwd, run = tiny_dry_run.proc, tiny_dry_run.cwd, tiny_dry_run.run
    assert p.returncode == 0, p.stderr
    assert "Sanity check: the pipeline learns (loss 2.3" in p.stderr
    (row,) = [r for r in results(cwd, run) if r["kind"] == "sanity"]
    assert row["status"] == "ok" and row["notes"]["sanity"]["passed"] and row["name"] == "sanity"
    summary = (cwd / "reports" / run / "summary.md").read_text()
    verdict = summary.split("## Verdict\n", 1)[1].lstrip()
    assert verdict.startswith("Sanity check: the pipeline learns (loss 2.3")
    quality = summary.split("## Quality\n", 1)[1]
    assert "A dry run trains 7 steps of 32 per process: too few to learn" in quality
    assert "against ln(10) = 2.30" in quality


def test_a_pipeline_that_does_not_learn_exits_3_with_its_reason(tmp_path, synthetic_root):
    p = run_study("--sanity", "--model", "tiny", "--data-root", str(synthetic_root), "--run-name", "s",
                  "--steps", "3", "--warmup", "1", "--subset", "64", "--val-steps", "1", "--profile", "",
                  "--no-pictures", cwd=tmp_path,
                  env={"PYTHONPATH": f"{REPO / 'tests' / 'inject'}:{REPO}", "STUDY_TEST_FAULTS": "00-base=blank-inputs"})
    assert p.returncode == 3, p.stderr
    line = ("Sanity check: the pipeline did not learn one batch: all 16 inputs of the batch are identical: the "
            "transform destroys the signal")
    assert f"study: {line}" in p.stderr
    stages = [r for r in results(tmp_path, "s") if r["kind"] == "stage"]
    assert [r["status"] for r in stages] == ["ok"]  # the ladder still ran: the check's failure is its own
    summary = (tmp_path / "reports" / "s" / "summary.md").read_text()
    assert summary.split("## Verdict\n", 1)[1].lstrip().startswith(line)


def test_a_results_file_with_a_check_still_reads_as_its_stages(tmp_path):
    from study.report.reading import RunData

    d = tmp_path / "reports" / "r"
    append_jsonl(d / "results.jsonl", StageResult(run="r", stage=0, name="sanity", kind="sanity", status="failed",
                                                  notes={"sanity": {"passed": False, "reason": "x"}}))
    append_jsonl(d / "results.jsonl", StageResult(run="r", stage=0, name="00-base", throughput=10.0))
    run = RunData(d)
    assert [r.name for r in run.stages] == ["00-base"]
