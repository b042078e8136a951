"""The attention network (VGG-att3-concat-dp): it builds for the datasets' class counts and input
sizes, its maps are distributions, a small one trained on a planted patch looks at the patch, and its
maps reach the pictures pass, TensorBoard, the report and predict."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import study.models.builtins  # noqa: F401 — the built-ins register when it loads
from study.models.attention_net import VGGAttention, early_pools, has_attention
from study.core.config import RunConfig
from study.models.registry import make
from tests.trained import assert_picture, synthetic_picture, trained_stage

SMALL = "tests/plugins/small_attention.py:build"  # an eighth of VGG-16's channels


@pytest.mark.parametrize("size,sides", [(32, (16, 8, 4)), (224, (56, 28, 14))])
@pytest.mark.parametrize("classes", [10, 100, 200])
def test_the_registered_model_builds_for_each_class_count_and_input_size(classes, size, sides):
    with torch.device("meta"):  # VGG-16's full widths: shapes only
        model, _ = make("vgg_attention", classes, "classify", size)
        logits, maps = model.attend(torch.empty(2, 3, size, size))
    assert tuple(logits.shape) == (2, classes)
    assert [tuple(a.shape) for a in maps] == [(2, s, s) for s in sides]
    assert model.classifier.out_features == classes and has_attention(model)


@pytest.mark.parametrize("size", [32, 224])
def test_each_estimator_s_map_sums_to_one_over_its_cells(size):
    torch.manual_seed(0)
    model = VGGAttention(200, size, width=0.125).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        logits, maps = model.attend(x)
        assert torch.equal(model(x), logits)  # forward is attend's logits: what training sees
    assert logits.shape == (2, 200) and len(maps) == 3
    for a in maps:
        assert float(a.min()) >= 0
        assert torch.allclose(a.flatten(1).sum(1), torch.ones(2), atol=1e-5)


def test_the_global_feature_is_projected_only_where_a_block_has_fewer_channels():
    model = VGGAttention(10, 32)
    projections = [type(e.project).__name__ for e in model.estimators]
    assert projections == ["Linear", "Identity", "Identity"]  # block 3: 256 channels, g: 512
    assert model.classifier.in_features == 256 + 512 + 512  # the three attended features, concatenated
    assert [early_pools(s) for s in (16, 32, 48, 64, 224)] == [0, 1, 1, 2, 2]


def test_the_dataset_s_size_decides_the_maps_through_the_builder():
    from study.models.builtins import build_model

    model = build_model(RunConfig(model="vgg_attention", dataset="imagefolder"), 4)  # 224 px
    with torch.device("meta"):
        model = model.to("meta")
        _, maps = model.attend(torch.empty(1, 3, 224, 224))
    assert [a.shape[-1] for a in maps] == [56, 28, 14]


def test_scripting_keeps_the_attention():
    model = VGGAttention(10, 32, width=0.125).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), atol=1e-5)


# --- a planted feature -------------------------------------------------------------------------
SIZE, PATCH = 32, 4
# The class is the colour of one small patch at a random place; a brighter white patch elsewhere
# carries nothing. An untrained network's features are largest on the brightest thing, so looking at
# the key patch (and not the white one) is what training taught the attention.
KEY_COLORS = torch.tensor([[1.5, -1.0, -1.0], [-1.0, 1.5, -1.0], [-1.0, -1.0, 1.5], [1.5, 1.5, -1.0]])
DISTRACTOR = torch.tensor([1.8, 1.8, 1.8])


def planted(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pictures, classes, key patch corners, distractor corners); the two patches never touch."""
    x = torch.rand(n, 3, SIZE, SIZE, generator=gen) * 0.8 - 0.4
    y = torch.randint(0, len(KEY_COLORS), (n,), generator=gen)
    key = torch.randint(0, SIZE - PATCH + 1, (n, 2), generator=gen)
    other = torch.randint(0, SIZE - PATCH + 1, (n, 2), generator=gen)
    for i in range(n):
        while (other[i] - key[i]).abs().max() < PATCH + 4:
            other[i] = torch.randint(0, SIZE - PATCH + 1, (2,), generator=gen)
        r, c = other[i].tolist()
        x[i, :, r:r + PATCH, c:c + PATCH] = DISTRACTOR.view(3, 1, 1)
        r, c = key[i].tolist()
        x[i, :, r:r + PATCH, c:c + PATCH] = KEY_COLORS[y[i]].view(3, 1, 1)
    return x, y, key, other


def near(side: int, corners: torch.Tensor) -> torch.Tensor:
    """N×side×side: the cells of a side×side map over the picture that touch the patch or a cell next to it."""
    cell = SIZE // side
    lo = torch.arange(side) * cell
    r, c = corners[:, 0].view(-1, 1), corners[:, 1].view(-1, 1)
    rows = (lo < r + PATCH + cell) & (lo + cell > r - cell)
    cols = (lo < c + PATCH + cell) & (lo + cell > c - cell)
    return rows[:, :, None] & cols[:, None, :]


def peak_rate(a: torch.Tensor, corners: torch.Tensor) -> tuple[float, float]:
    """(share of pictures whose map peaks on or next to the patch, the share a peak anywhere at random
    would reach: chance)."""
    region = near(a.shape[-1], corners)
    peak = a.flatten(1).argmax(1)
    hit = region.flatten(1).gather(1, peak.view(-1, 1)).squeeze(1)
    return float(hit.float().mean()), float(region.flatten(1).float().mean())


@pytest.fixture(scope="module")
def patch_model() -> VGGAttention:
    """The small variant trained 60 steps (about 3 s) to name the key patch's colour."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # convolutions this small gain nothing from a second thread and lose much on a busy machine
    try:
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(0)
        model = VGGAttention(len(KEY_COLORS), SIZE, width=0.125)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(60):
            x, y, _, _ = planted(32, gen)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def test_the_attention_of_a_trained_model_peaks_on_the_planted_patch(patch_model):
    x, y, key, other = planted(64, torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, maps = patch_model.attend(x)
    accuracy = float((logits.argmax(1) == y).float().mean())
    assert accuracy > 0.8, f"the small model did not learn the patch's colour (accuracy {accuracy:.2f})"
    finest = maps[0]  # conv3, 16×16 cells of 2 px
    on_key, chance = peak_rate(finest, key)
    on_white, _ = peak_rate(finest, other)
    assert chance < 0.1
    assert on_key >= 0.5 and on_key > 5 * chance, (on_key, chance)
    assert on_key > 2 * on_white, (on_key, on_white)  # it looks at the evidence, not at the brightest thing
    # the attention holds its mass there too, not just its peak
    mass = float((finest * near(16, key)).flatten(1).sum(1).mean())
    assert mass > 3 * chance, (mass, chance)


# --- the attention as pictures -----------------------------------------------------------------
@pytest.fixture(scope="module")
def attention_stage(synthetic_root, tmp_path_factory):
    return trained_stage(synthetic_root, tmp_path_factory.mktemp("att"), "classify", steps=4, model=SMALL)


def test_the_pictures_pass_draws_each_estimator_s_map(attention_stage, tmp_path):
    from study.pictures.make import run as pictures_pass
    from tests.test_pictures import image_tags, report_with

    payload = pictures_pass(attention_stage)
    out = attention_stage.config.report_dir
    assert set(payload["files"]) == {"confusion_matrix", "cam_grid", "attention"}
    assert payload["files"]["attention"] == "attention.png"
    assert payload["attention"] == [{"estimator": "conv3", "side": [16, 16]}, {"estimator": "conv4", "side": [8, 8]},
                                    {"estimator": "conv5", "side": [4, 4]}]
    grid = assert_picture(out / "attention.png", min_side=300)
    assert grid.size[1] > grid.size[0]  # 8 rows of picture | conv3 | conv4 | conv5
    assert "pictures/attention" in image_tags(attention_stage.profile_dir)
    json.dumps(payload)  # what the parent writes to pictures.json

    run = report_with(tmp_path, payload, out)
    md = (run / "summary.md").read_text()
    assert "](attention.png)" in md  # the picture is in the report
    assert "conv3 16×16, conv4 8×8, conv5 4×4" in md


def test_predict_writes_one_overlay_per_estimator(attention_stage, tmp_path, capsys):
    from study.cli import main

    img = synthetic_picture(tmp_path / "cat.png", 3)
    out = tmp_path / "pred"
    assert main(["predict", str(img), "--checkpoint", str(attention_stage.checkpoint_path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert_picture(out / "cat.cam.png", min_side=300)
    for name in ("conv3", "conv4", "conv5"):
        assert f"attention overlay: {out / f'cat.attention-{name}.png'}" in text
        assert_picture(out / f"cat.attention-{name}.png", min_side=300)
