"""Tiny trained checkpoints for the picture and predict tests: a few real steps, saved by the loop."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from study.core.config import RunConfig
from study.core.stage_spec import StageSpec


def trained_stage(data_root: Path, out: Path, task: str = "classify", steps: int = 12, model: str = "tiny") -> StageSpec:
    """A stage whose checkpoint (reports/<run>/checkpoints/<stage>.pt) holds a small model (tiny, or
    `model`) trained `steps` steps, saved through the loop's save_checkpoint, metadata and all."""
    from study.train.checkpoints import save_checkpoint
    from study.stage.session import build_session

    sizes = dict(image_size=32, batch_size=4) if task == "segment" else dict(batch_size=16)
    cfg = RunConfig(task=task, model=model, data_root=str(data_root), subset=64, val_subset=40, steps=steps,
                    val_steps=2, warmup=1, threads=1, run_name=f"pics-{task}", reports_root=str(out / "reports"),
                    profiles_root=str(out / "profiles"), **sizes)
    spec = StageSpec(index=0, name="00-base", stack=(), config=cfg)
    sess = build_session(spec)
    sess.run_steps(steps)
    save_checkpoint(spec.checkpoint_path, sess.state)
    return spec


def assert_picture(path: Path, min_side: int = 64) -> Image.Image:
    """A PNG a person can look at: opens, has a sensible size, and is not blank."""
    assert path.is_file(), path
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG", (path, im.format)
        rgb = im.convert("RGB")
    assert min(rgb.size) >= min_side, (path, rgb.size)
    pixels = np.asarray(rgb, dtype=np.float64)
    assert pixels.std() > 5, f"{path} is (nearly) one flat colour"
    colors = rgb.getcolors(maxcolors=1 << 20)
    assert colors is None or len(colors) > 20, f"{path} has only {len(colors)} colours"
    return rgb


def synthetic_picture(path: Path, label: int = 3, size: int = 48) -> Path:
    """One picture drawn like the synthetic CIFAR classes (background hue + shape)."""
    from study.data import synthetic

    pixels = synthetic.shape_images(np.random.default_rng(label), np.array([label]), size, 10)[0]
    Image.fromarray(pixels).save(path)
    return path
