"""`python -m study predict IMAGE... --checkpoint CKPT`: a trained checkpoint tried on pictures.

Classification: the top-5 classes with their probabilities (a table) and a Grad-CAM overlay PNG per
picture (and, for a model with attention estimators, one overlay of each estimator's map).
Segmentation: the predicted mask over the picture (PNG) and each class's share of the pixels. The
checkpoint's own metadata says which model to build, the classes, the input size and the
normalisation, so no other flag is needed.

`check_inputs` is torch-free: a missing picture, a file that is no picture or a checkpoint of another
kind is one line and exit 2 before torch is imported.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from study.core.config import ConfigError
from study.train.checkpoint_meta import read_meta

TOP_K = 5


def too_large(name: str, size: tuple[int, int], limit: int) -> ConfigError:
    w, h = size
    return ConfigError(f"{name} is {w}x{h} ({w * h / 1e6:.0f} Mpx), more than the {limit / 1e6:.0f} Mpx a picture may "
                       f"have to be decoded safely; downscale it first (the model sees it at a few hundred pixels)")


def check_images(images: list[str]) -> list[Path]:
    import warnings

    from PIL import Image, UnidentifiedImageError

    limit = Image.MAX_IMAGE_PIXELS or 0
    paths = []
    for name in images:
        p = Path(name)
        if not p.is_file():
            raise ConfigError(f"image not found: {name}")
        try:
            with warnings.catch_warnings():
                # PIL warns from its limit and refuses from twice it: both are pictures too large to
                # decode here, refused from the header before any pixel is decoded
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(p) as im:
                    if limit and im.size[0] * im.size[1] > limit:
                        raise too_large(name, im.size, limit)
                    im.verify()  # reads the header and checks the data without decoding all of it
        except ConfigError:
            raise
        except Image.DecompressionBombError as e:
            pixels = "".join(ch for ch in str(e).partition("pixels")[0] if ch.isdigit())
            raise ConfigError(f"{name} has {int(pixels or 0) / 1e6:.0f} Mpx, more than the {limit / 1e6:.0f} Mpx a picture "
                              f"may have to be decoded safely; downscale it first (the model sees it at a few "
                              f"hundred pixels)") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise ConfigError(f"{name} is not a picture PIL can read ({type(e).__name__})") from None
        paths.append(p)
    return paths


def check_out(out: str) -> Path:
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; give a folder for the overlays (it is made when missing)")
    return p


def check_inputs(images: list[str], checkpoint: str, out: str = "predictions") -> tuple[list[Path], dict[str, Any]]:
    """(picture paths, checkpoint meta), or ConfigError; never imports torch."""
    check_out(out)
    meta = read_meta(checkpoint)
    return check_images(images), meta


def probability(p: float) -> str:
    """0.912, or 3.1e-05 where three decimals would read as a flat zero."""
    return f"{p:.3f}" if p >= 1e-3 or p == 0 else f"{p:.1e}"


def output_names(paths: list[Path], suffix: str) -> list[str]:
    """<stem><suffix>.png per picture; a repeated stem gets -2, -3, ... so no overlay overwrites another."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        seen[p.stem] = seen.get(p.stem, 0) + 1
        names.append(f"{p.stem}{'' if seen[p.stem] == 1 else f'-{seen[p.stem]}'}{suffix}.png")
    return names


def predict(paths: list[Path], checkpoint: Path, out_dir: Path, device: str = "auto",
            console: Any = None) -> list[dict[str, Any]]:
    """Run the checkpoint on each picture, print its table, write its overlay; returns one record per
    picture (image, overlay path, top classes or pixel shares)."""
    import numpy as np
    import torch
    from PIL import Image

    from study.models.attention_net import has_attention
    from study.pictures.gradcam import GradCAM, why_no_cam
    from study.train.checkpoint_meta import device_for, load_model, preprocess
    from study.pictures import draw
    from study.report.tables import make_console, print_table
    from study.train.tasks import logits_of

    console = console or make_console()
    dev = device_for(device)
    model, meta = load_model(checkpoint, dev)
    classes, segment = meta["classes"], meta["task"] == "segment"
    about = f"{meta['model']} on {meta['dataset']}, {meta['trained_steps']} training steps"
    out_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"checkpoint {checkpoint}: {meta['task']}, {about}, {len(classes)} classes, "
                  f"{meta['image_size']} px input")
    records = []
    for path, name in zip(paths, output_names(paths, ".mask" if segment else ".cam")):
        with Image.open(path) as im:
            x, view = preprocess(im, meta)
        picture = np.asarray(view, dtype=np.float64) / 255.0
        target = out_dir / name
        if segment:
            with torch.no_grad():
                mask = logits_of(model(x.to(dev)))[0].argmax(0).cpu().numpy()
            counts = np.bincount(mask.ravel(), minlength=len(classes))
            shares = [{"class": c, "pixel share": float(counts[i] / mask.size)} for i, c in enumerate(classes)]
            fig = draw.prediction_figure(picture, draw.mask_overlay(picture, mask, len(classes)),
                                         f"{path.name} ({about})", "predicted mask", target)
            console.print(f"[bold]{path.name}[/]: predicted pixels per class")
            print_table(console, [{"class": s["class"], "pixel share": f"{s['pixel share'] * 100:.1f} %"}
                                  for s in shares], "")
            records.append({"image": str(path), "overlay": str(target), "pixel_shares": shares})
        else:
            no_cam = why_no_cam(model)  # a plug-in model without convolutions: the picture without a map
            if no_cam:
                with torch.no_grad():
                    logits = logits_of(model(x.to(dev))).float().cpu()
            else:
                cam = GradCAM(model)
                heat, logits = cam(x.to(dev))
            probs = logits.softmax(1)[0]
            p_top, i_top = probs.topk(min(TOP_K, len(classes)))
            top = [{"class": classes[i], "probability": float(p)} for p, i in zip(p_top.tolist(), i_top.tolist())]
            fig = draw.prediction_figure(picture, picture if no_cam else draw.heat_overlay(picture, heat[0].numpy()),
                                         f"{path.name}: {top[0]['class']} {top[0]['probability']:.2f} ({about})",
                                         f"no Grad-CAM: {no_cam}" if no_cam else
                                         f"Grad-CAM ({cam.layer_name}): {top[0]['class']}", target)
            console.print(f"[bold]{path.name}[/]: top-{len(top)}")
            print_table(console, [{"#": k + 1, "class": t["class"], "probability": probability(t["probability"])}
                                  for k, t in enumerate(top)], "")
            record = {"image": str(path), "overlay": str(target), "top": top}
            if has_attention(model):
                record["attention"] = attention_overlays(model, x.to(dev), picture, out_dir / name, path.name,
                                                         about, console)
            records.append(record)
        draw.close(fig)
        console.print(f"overlay: {target}")
    return records


def attention_overlays(model: Any, x: Any, picture: Any, cam_target: Path, image_name: str, about: str,
                       console: Any) -> list[str]:
    """<stem>.attention-<estimator>.png beside the Grad-CAM overlay, one per attention estimator of the
    model (its own `attend`); returns their paths."""
    import torch

    from study.models.attention_net import attention_names, upsampled
    from study.pictures import draw

    with torch.no_grad():
        _, maps = model.attend(x)
    stem = cam_target.name[: -len(".cam.png")]
    written = []
    for name, a, heat in zip(attention_names(model, len(maps)), maps, upsampled(maps, picture.shape[:2])):
        target = cam_target.with_name(f"{stem}.attention-{name}.png")
        fig = draw.prediction_figure(picture, draw.heat_overlay(picture, heat[0].numpy()),
                                     f"{image_name}: attention of {name} ({about})",
                                     f"attention {name} ({a.shape[-2]}×{a.shape[-1]} cells)", target)
        draw.close(fig)
        console.print(f"attention overlay: {target}")
        written.append(str(target))
    return written
