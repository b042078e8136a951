"""A user's model: `--model FILE.py:FUNC`, `torchvision:NAME`, `timm:NAME` through the model registry.

Short real studies (the CLI in the test's process, its stages in child processes; tiny sizes) for what happens after the timing
(pictures, predict, a toggle that cannot take the model); the library models are built and trained
one step in-process.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from study.core.config import MODELS, RunConfig
from tests.util import REPO, run_cli, stage_rows

EXAMPLE = REPO / "examples" / "my_model.py"
PLUGINS = REPO / "tests" / "plugins"
SHORT = ["--steps", "4", "--warmup", "1", "--subset", "64", "--batch-size", "8", "--val-steps", "1", "--profile", ""]


def short_study(root: Path, cwd: Path, model: str, *more: str, run: str = "p"):
    proc = run_cli("--model", model, *SHORT, *more, "--data-root", str(root), "--run-name", run, cwd=cwd)
    return proc, {r["name"]: r for r in stage_rows(cwd, run)}


def test_builtins_register_through_the_registry() -> None:
    import study.models.builtins  # noqa: F401 — the built-ins register as the module loads
    from study.models.registry import REGISTRY, entry

    assert set(MODELS) <= set(REGISTRY) and entry("resnet18").heads == ("fc",)


@pytest.mark.slow  # a study, its pictures pass and more: about 17-20 s of CPU
def test_user_model_file_trains_and_predict_rebuilds_it(synthetic_root: Path, tmp_path: Path) -> None:
    proc, rows = short_study(synthetic_root, tmp_path, f"{EXAMPLE}:build")
    assert proc.returncode == 0, proc.stderr
    assert rows["00-base"]["status"] == "ok" and rows["00-base"]["throughput"] > 0
    pics = json.loads((tmp_path / "reports" / "p" / "pictures.json").read_text())
    assert pics["model"] == f"{EXAMPLE}:build" and pics["cam_layer"].startswith("features")  # its last conv
    assert (tmp_path / "reports" / "p" / "cam_grid.png").is_file() and not pics["cam_skipped"]

    from PIL import Image

    picture = tmp_path / "red.png"
    Image.new("RGB", (40, 40), (220, 20, 20)).save(picture)
    out = run_cli("predict", str(picture), "--checkpoint", str(tmp_path / "reports" / "p" / "checkpoints" / "00-base.pt"),
                  "--out", str(tmp_path / "pred"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "my_model.py:build" in out.stdout and (tmp_path / "pred" / "red.cam.png").is_file()


@pytest.mark.slow  # a study, its pictures pass and more: about 17-20 s of CPU
def test_model_without_a_conv_skips_channels_last_and_its_cam_with_the_reasons(synthetic_root: Path, tmp_path: Path) -> None:
    proc, rows = short_study(synthetic_root, tmp_path, f"{EXAMPLE}:build_mlp", "--stack", "channels_last")
    assert proc.returncode == 0, proc.stderr
    assert rows["00-base"]["status"] == "ok"
    # found by the preflight, so no stage process starts for it
    assert rows["01-channels_last"]["status"] == "skipped" and "no 2-D convolution" in rows["01-channels_last"]["reason"]
    pics = json.loads((tmp_path / "reports" / "p" / "pictures.json").read_text())
    assert "error" not in pics and "no convolution" in pics["cam_skipped"]
    assert (tmp_path / "reports" / "p" / "confusion_matrix.png").is_file()
    assert not (tmp_path / "reports" / "p" / "cam_grid.png").exists()
    assert "Grad-CAM skipped" in (tmp_path / "reports" / "p" / "summary.md").read_text()


@pytest.mark.slow  # a study, its pictures pass and more: about 17-20 s of CPU
def test_script_fails_on_data_dependent_control_flow_and_the_ladder_goes_on(synthetic_root: Path,
                                                                             tmp_path: Path) -> None:
    # The preflight cannot run this forward on meta (it reads the batch's values): it runs it on the CPU.
    proc, rows = short_study(synthetic_root, tmp_path, f"{PLUGINS / 'routed_model.py'}:build", "--no-pictures",
                             "--stack", "script,workers=1")
    assert proc.returncode == 3, proc.stderr  # a stage failed; the run itself finished
    assert rows["00-base"]["status"] == "ok"
    assert rows["01-script"]["status"] == "failed"
    assert "ModuleDict" in rows["01-script"]["error"]  # TorchScript's own reason, passed on
    assert "Tracer cannot infer type" in rows["01-script"]["error"]
    assert "02-workers_1" in rows  # measured after the failure (it carries script too, so it fails the same way)


def train_one_step(model: torch.nn.Module, num_classes: int) -> float:
    from study.train.tasks import build_task

    task = build_task("classify", num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4) % num_classes
    loss = task.loss(model.train()(x), y)
    loss.backward()
    opt.step()
    return float(loss.detach())


@pytest.mark.parametrize("ref,head", [("torchvision:mobilenet_v3_small", "classifier.3"), ("timm:resnet10t", "fc"),
                                      (f"{EXAMPLE}:build", "head.2")])
def test_library_model_has_the_dataset_classes_and_trains(ref: str, head: str, tmp_path: Path) -> None:
    from study.models.builtins import build_model, model_heads

    cfg = RunConfig(model=ref)
    model = build_model(cfg, 7)
    with torch.no_grad():
        assert tuple(model.eval()(torch.randn(2, 3, 32, 32)).shape) == (2, 7)
    assert model_heads(cfg, model.state_dict(), 7) == {f"{head}.weight", f"{head}.bias"}
    assert torch.isfinite(torch.tensor(train_one_step(model, 7)))

    # --weights of the same architecture with another class count: everything but the head loads
    torch.save(build_model(cfg, 10).state_dict(), tmp_path / "w.pt")
    loaded, total = build_model(cfg.replace(weights=str(tmp_path / "w.pt")), 7).loaded_weights
    assert loaded == total - 2
    frozen = build_model(cfg.replace(freeze_backbone=True), 7)
    assert {n for n, p in frozen.named_parameters() if p.requires_grad} == {f"{head}.weight", f"{head}.bias"}


def test_torchvision_segmentation_builder_for_segment() -> None:
    from study.models.builtins import build_model

    with torch.device("meta"):  # as the preflight builds it: no memory, nothing downloaded
        model = build_model(RunConfig(task="segment", model="torchvision:lraspp_mobilenet_v3_large"), 3)
        out = model.train()(torch.empty(2, 3, 64, 64))
    assert tuple(out["out"].shape) == (2, 3, 64, 64) and "aux" not in out


def test_compile_on_a_plugin_model_trains_past_its_graph_break_and_names_it() -> None:
    # Dynamo alone (backend="eager"): the breaks are Dynamo's; Inductor would add minutes of C++ here.
    from optimizations.compile import CompileWatch
    from study.models.builtins import build_model

    model = build_model(RunConfig(model=f"{PLUGINS / 'routed_model.py'}:build"), 10)
    watch = CompileWatch()
    compiled = torch.compile(model, backend="eager")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    losses = []
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(compiled(x)["out"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    stats = watch.stats()
    assert stats["graph_breaks"] >= 1, stats
    assert any("routed_model.py" in r for r in stats["graph_break_reasons"]), stats["graph_break_reasons"]
    assert losses[-1] < losses[0]
