"""A user's dataset (--dataset FILE.py:FUNC) and task (--task FILE.py:CLASS): they open, train and
learn, and the example language model's parts load and train. The bad plug-ins are in the bad-input
catalogue (tests/test_bad_input.py)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from study.cli import main
from study.core.config import ConfigError, RunConfig
from tests.util import REPO

HALVES = str(REPO / "tests" / "plugins" / "two_halves.py")
LM = str(REPO / "examples" / "char_lm.py")


@pytest.mark.slow  # a whole study: its stage in a child process
def test_a_user_dataset_trains_and_beats_chance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    """Two classes (chance 0.5) with a clear signal: tiny must get most validation items right in 20
    steps, through the whole CLI (preflight, a stage process, records, report)."""
    monkeypatch.chdir(tmp_path)
    code = main(["--model", "tiny", "--dataset", f"{HALVES}:halves", "--steps", "20", "--warmup", "2",
                 "--batch-size", "16", "--val-steps", "2", "--profile", "", "--no-pictures", "--run-name", "p"])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = [json.loads(ln) for ln in (tmp_path / "reports" / "p" / "results.jsonl").read_text().splitlines()]
    stage = next(r for r in rows if r.get("kind") == "stage")
    assert stage["status"] == "ok", stage
    assert stage["metric_name"] == "top1" and stage["metric"] > 0.75, stage["metrics"]
    with open(tmp_path / "reports" / "p" / "stages" / "_preflight" / "records-r0.csv", newline="") as fh:
        types = [row[0] for row in csv.reader(fh)]
    assert "10" in types and "11" in types  # the plug-in's load timed as the built-ins' are


def test_the_class_count_comes_from_the_targets_or_the_classes() -> None:
    from study.data import open_datasets

    counted = open_datasets(RunConfig(model="tiny", dataset=f"{HALVES}:halves", subset=100, val_subset=20))
    assert counted.num_classes == 2 and counted.classes == []  # max target + 1 over a scan
    assert (len(counted.train), len(counted.val)) == (100, 20)  # --subset / --val-subset apply
    assert [r.split for r in counted.loads] == ["train", "val"] and counted.loads[0].count == 512
    named = open_datasets(RunConfig(model="tiny", dataset=f"{HALVES}:halves_named"))
    assert named.num_classes == 2 and named.classes == ["top", "bottom"]


def test_a_plug_in_task_registers_like_the_built_ins() -> None:
    from study.train.tasks import Classification, Segmentation, build_task, task_class

    assert task_class("classify") is Classification and task_class("segment") is Segmentation
    task = build_task(f"{HALVES}:MyClassification", 2)
    assert isinstance(task, Classification) and task.name == "my-classify"
    with pytest.raises(ConfigError, match="not a subclass of study.train.tasks.Task"):
        build_task(f"{HALVES}:NotATask", 2)


def test_the_example_language_model_loads_and_learns() -> None:
    """Its dataset and task load through the study's registries; its loss falls in a few steps and its
    metric is a perplexity below the vocabulary's (uniform guessing) after them."""
    from study.data import open_datasets
    from study.train.tasks import build_task

    cfg = RunConfig(task=f"{LM}:NextToken", model=f"{LM}:build", dataset=f"{LM}:corpus")
    bundle = open_datasets(cfg)
    vocab = bundle.num_classes
    assert vocab == len(bundle.classes) == 96 and len(bundle.train) > 1000
    x, y = bundle.train[0]
    assert x.dtype == torch.long and x.shape == y.shape and torch.equal(x[1:], y[:-1])  # y: the next tokens
    task = build_task(cfg.task, vocab)
    assert task.samples(torch.zeros(4, 64, dtype=torch.long)) == 256  # tokens
    from study.core.references import resolve

    torch.manual_seed(0)
    model = resolve(cfg.model)(vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loader = torch.utils.data.DataLoader(bundle.train, batch_size=16, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    losses = []
    for _, (xb, yb) in zip(range(30), loader):
        loss = task.loss(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.75 * sum(losses[:3]) / 3, losses
    metric = task.metric()
    with torch.no_grad():
        xb, yb = next(iter(torch.utils.data.DataLoader(bundle.val, batch_size=32)))
        metric.update(model(xb), yb)
    scores = metric.compute()
    assert scores["perplexity"] < vocab / 3 and 0 < scores["token_acc"] <= 1, scores


@pytest.mark.slow  # a preflight and two stage processes: about 15 s of CPU
def test_the_language_models_ladder_skips_channels_last_and_scripts_on_token_ids(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["--task", f"{LM}:NextToken", "--model", f"{LM}:build", "--dataset", f"{LM}:corpus",
                 "--stack", "channels_last,script", "--steps", "3", "--warmup", "1", "--subset", "64",
                 "--val-steps", "1", "--profile", "", "--no-pictures", "--run-name", "lm"])
    assert code == 0, capsys.readouterr().err
    rows = {r["name"]: r for r in map(json.loads, (tmp_path / "reports" / "lm" / "results.jsonl").read_text().splitlines())
            if r.get("kind") == "stage"}
    skipped = rows["01-channels_last"]
    assert skipped["status"] == "skipped" and "int64 samples of shape (64,)" in skipped["reason"], skipped
    # script takes the stage's own token batch as its example (an image batch would not embed)
    assert rows["02-script"]["status"] == "ok" and rows["02-script"]["stack"] == ["script"], rows["02-script"]
    assert rows["02-script"]["notes"]["script"] in ("scripted",) or rows["02-script"]["notes"]["script"].startswith("traced")
