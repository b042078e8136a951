"""`python -m study predict`: a checkpoint alone tried on pictures; bad input is one line and exit 2."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from study.cli import main
from study.train.checkpoint_meta import META_KEYS, read_meta
from tests.trained import assert_picture, synthetic_picture, trained_stage
from tests.util import REPO, tables


@pytest.fixture(scope="module")
def classify_ckpt(synthetic_root, tmp_path_factory) -> Path:
    return trained_stage(synthetic_root, tmp_path_factory.mktemp("cls"), "classify").checkpoint_path


@pytest.fixture(scope="module")
def segment_ckpt(synthetic_root, tmp_path_factory) -> Path:
    return trained_stage(synthetic_root, tmp_path_factory.mktemp("seg"), "segment").checkpoint_path


def test_checkpoints_carry_what_predict_needs(classify_ckpt, segment_ckpt):
    meta = read_meta(classify_ckpt)
    assert set(META_KEYS) <= set(meta)
    assert (meta["model"], meta["task"], meta["dataset"], meta["image_size"]) == ("tiny", "classify", "cifar10", 32)
    assert meta["classes"][:3] == ["airplane", "automobile", "bird"] and meta["num_classes"] == 10
    assert meta["mean"] == pytest.approx([0.4914, 0.4822, 0.4465])
    seg = read_meta(segment_ckpt)
    assert (seg["task"], seg["classes"], seg["resize"]) == ("segment", ["background", "pet"], "square")
    # torch itself reads the same dict back, with weights_only
    assert torch.load(classify_ckpt, weights_only=True)["meta"] == meta


def test_classify_prints_top5_and_writes_a_cam_overlay(classify_ckpt, tmp_path, capsys):
    a, b = synthetic_picture(tmp_path / "a.png", 3), synthetic_picture(tmp_path / "sub.jpg", 7, size=80)
    out = tmp_path / "pred"
    assert main(["predict", str(a), str(b), "--checkpoint", str(classify_ckpt), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "a.png: top-5" in text and "sub.jpg: top-5" in text
    about = next(line for line in text.splitlines() if line.startswith("checkpoint "))
    assert all(fact in about for fact in ("classify", "tiny", "cifar10", "12 training steps"))
    top5 = [t for t in tables(text) if t[0][0] == "#"]  # one table a picture: rank, class, probability
    assert len(top5) == 2
    for t in top5:
        assert [r[0] for r in t[1:]] == ["1", "2", "3", "4", "5"] and len({r[1] for r in t[1:]}) == 5
    for name in ("a.cam.png", "sub.cam.png"):
        assert f"overlay: {out / name}" in text
        assert_picture(out / name, min_side=300)


def test_top5_is_the_model_on_the_validation_transform(classify_ckpt, synthetic_root, tmp_path):
    """A validation picture written as PNG gets exactly the tensor the run's validation loader made."""
    from study.core.config import RunConfig
    from study.data import open_datasets
    from study.train.checkpoint_meta import load_model, preprocess
    from study.predict import predict

    val = open_datasets(RunConfig(model="tiny", data_root=str(synthetic_root))).val
    Image.fromarray(val.data[0]).save(tmp_path / "v0.png")
    model, meta = load_model(classify_ckpt)
    with Image.open(tmp_path / "v0.png") as im:
        x, _ = preprocess(im, meta)
    assert torch.allclose(x[0], val[0][0], atol=1e-6)
    (rec,) = predict([tmp_path / "v0.png"], classify_ckpt, tmp_path / "out")
    with torch.no_grad():
        probs = model(val[0][0][None]).softmax(1)[0]
    top = [t["probability"] for t in rec["top"]]
    assert top == sorted(top, reverse=True) and top == pytest.approx(probs.topk(5).values.tolist(), abs=1e-5)
    assert [t["class"] for t in rec["top"]] == [meta["classes"][i] for i in probs.topk(5).indices.tolist()]


def test_predict_reads_the_weights_a_finished_stage_keeps(classify_ckpt, tmp_path, capsys):
    """A study keeps weights and metadata only (study.train.checkpoints.keep_weights_only); predict gives the same
    answer on them as on the full checkpoint."""
    import shutil

    from study.train.checkpoints import keep_weights_only
    from study.predict import predict

    kept = tmp_path / "00-base.pt"
    shutil.copy(classify_ckpt, kept)
    keep_weights_only(kept)
    assert "optimizer" not in torch.load(kept, weights_only=True) and read_meta(kept) == read_meta(classify_ckpt)
    img = synthetic_picture(tmp_path / "a.png", 3)
    (full,) = predict([img], classify_ckpt, tmp_path / "full")
    (slim,) = predict([img], kept, tmp_path / "slim")
    assert slim["top"] == full["top"]
    about = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("checkpoint "))
    assert all(fact in about for fact in ("classify", "tiny", "cifar10", "12 training steps"))


def test_segment_prints_pixel_shares_and_writes_the_mask_overlay(segment_ckpt, tmp_path, capsys):
    from study.predict import predict

    pet = tmp_path / "pet.jpg"  # not square, not the input size: predict resizes as validation does
    Image.fromarray((np.random.default_rng(0).random((60, 90, 3)) * 255).astype(np.uint8)).save(pet)

    (rec,) = predict([pet], segment_ckpt, tmp_path / "out")
    shares = {s["class"]: s["pixel share"] for s in rec["pixel_shares"]}
    assert set(shares) == {"background", "pet"} and sum(shares.values()) == pytest.approx(1.0)
    assert_picture(Path(rec["overlay"]), min_side=300)
    text = capsys.readouterr().out
    assert "pet.jpg: predicted pixels per class" in text and " %" in text


def one_line_exit_2(args: list[str], cwd: Path) -> str:
    """Run predict in a fresh interpreter; it must refuse with one line, exit 2, and never import torch."""
    code = ("import sys; from study.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code, "predict", *args], cwd=cwd, capture_output=True, text=True,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("study: error: "), p.stderr
    return lines[0]


def test_bad_input_is_one_line_and_exit_2_before_torch(classify_ckpt, tmp_path):
    img = synthetic_picture(tmp_path / "ok.png")
    (tmp_path / "notes.png").write_text("not a picture")
    torch.save({"conv.weight": torch.ones(2)}, tmp_path / "state_dict.pt")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("x/readme.txt", "hello")
    ck = str(classify_ckpt)
    assert "image not found: missing.png" in one_line_exit_2(["missing.png", "--checkpoint", ck], tmp_path)
    assert "notes.png is not a picture" in one_line_exit_2(["notes.png", "--checkpoint", ck], tmp_path)
    assert "checkpoint not found" in one_line_exit_2([str(img), "--checkpoint", "nope.pt"], tmp_path)
    assert "not a PyTorch checkpoint" in one_line_exit_2([str(img), "--checkpoint", str(img)], tmp_path)
    assert "not a PyTorch checkpoint" in one_line_exit_2([str(img), "--checkpoint", "other.zip"], tmp_path)
    assert "not a study checkpoint" in one_line_exit_2([str(img), "--checkpoint", "state_dict.pt"], tmp_path)
    assert "--checkpoint" in one_line_exit_2([str(img)], tmp_path)
    (tmp_path / "a-file").write_text("")
    said = one_line_exit_2([str(img), "--checkpoint", ck, "--out", "a-file"], tmp_path)
    assert "--out" in said and "a-file" in said
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"\0" * 64 + classify_ckpt.read_bytes()[64:])  # its zip header zeroed
    assert "damaged or not a checkpoint" in one_line_exit_2([str(img), "--checkpoint", str(damaged)], tmp_path)
    # headers alone: PIL reads the size without decoding, so the test allocates nothing
    (tmp_path / "panorama.png").write_bytes(png_header(12000, 10000))  # above PIL's limit: it warns
    assert "panorama.png is 12000x10000 (120 Mpx)" in one_line_exit_2(["panorama.png", "--checkpoint", ck], tmp_path)
    (tmp_path / "bomb.png").write_bytes(png_header(40000, 40000))  # above twice the limit: PIL refuses
    assert "bomb.png has 1600 Mpx" in one_line_exit_2(["bomb.png", "--checkpoint", ck], tmp_path)


def png_header(width: int, height: int) -> bytes:
    """A PNG's signature and header chunk claiming width x height (8-bit RGB), and its end."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def test_a_checkpoint_with_unknown_metadata_is_refused(classify_ckpt, tmp_path):
    from study.core.config import ConfigError

    state = torch.load(classify_ckpt, weights_only=True)
    state["meta"] = {**state["meta"], "format": 99}
    torch.save(state, tmp_path / "future.pt")
    with pytest.raises(ConfigError, match="metadata format 99"):
        read_meta(tmp_path / "future.pt")
    state["meta"] = {**state["meta"], "format": 1, "model": "vit_h"}
    torch.save(state, tmp_path / "alien.pt")
    with pytest.raises(ConfigError, match="cannot build"):
        read_meta(tmp_path / "alien.pt")
