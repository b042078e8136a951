"""Which checks a dataset folder passes or skips, and the hints that name what to run next.

Torch-free: the parent process (the report's "run" row) and ``prepare.sh`` read it.

Two markers make a reader skip a release's checksums: ``SYNTHETIC`` (written by the synthetic
writers) and ``UNVERIFIED`` (a copy the user accepted as it is, written by ``prepare.sh
--no-verify``). Either way the files are still vetted (pickles may build nothing but arrays), and
``skipped_checks`` says what was skipped so that the report can say it.

A hint never proposes writing synthetic data into a folder that holds anything else: a user who
points ``--data-root`` at their own dataset (an ImageNet ``CLS-LOC`` folder, say) is told to prepare
it into a data root of this tool instead.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from study.core import catalog
from study.data.synthetic import MARKER, is_synthetic

ACCEPTED = "UNVERIFIED"
# Datasets whose readers verify the release's checksums (the others have none to verify).
VERIFIED = (catalog.CIFAR10.name, catalog.CIFAR100.name)


def is_accepted(folder: str | os.PathLike) -> bool:
    """True when the user accepted ``folder`` without its release checksums."""
    return (Path(folder) / ACCEPTED).is_file()


def is_unchecked(folder: str | os.PathLike) -> bool:
    """True when a reader skips the release checksums of ``folder`` (synthetic, or accepted)."""
    return is_synthetic(folder) or is_accepted(folder)


def accept(folder: Path, why: str) -> None:
    """Mark ``folder`` UNVERIFIED: its files are used as they are, the MD5 check skipped."""
    info = {"accepted": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "why": why,
            "meaning": "the MD5 check against the official release is skipped for this folder"}
    (folder / ACCEPTED).write_text(json.dumps(info, indent=2) + "\n")


def skipped_checks(data_root: str, dataset: str) -> list[str]:
    """What the reader of ``dataset`` under ``data_root`` skips, one sentence each (empty: nothing)."""
    if dataset not in VERIFIED or data_root.startswith("s3://"):
        return []
    folder = Path(data_root) / catalog.get(dataset).folder
    if is_synthetic(folder):
        return [f"MD5 check skipped: {folder} is marked {MARKER} (the synthetic stand-in, not the release)"]
    if is_accepted(folder):
        return [f"MD5 check skipped: {folder} is marked {ACCEPTED} (a copy accepted as it is with "
                f"./prepare.sh --no-verify); its files may differ from the official release"]
    return []


def root_option(root: str | os.PathLike) -> str:
    """`` --root ROOT`` for a command line, or nothing for the default root ``data``."""
    return "" if os.path.normpath(str(root)) == "data" else f" --root {root}"


def holds_other_data(root: str | os.PathLike) -> bool:
    """True when ``root`` holds something other than this tool's dataset folders (hidden entries
    aside): a user's own dataset tree, never a place to write synthetic data into."""
    p = Path(root)
    if not p.is_dir() or os.path.normpath(str(root)) == "data":  # data/ is this tool's root by convention
        return False
    ours = {d.folder for d in catalog.DATASETS}
    return any(not e.name.startswith(".") and e.name not in ours for e in p.iterdir())


def prepare_hint(root: str | os.PathLike, action: str) -> str:
    """What to run when a dataset is missing under ``root``; ``action`` prepares the real one
    (``--cifar cifar-10-python.tar.gz``). Keeps the user's --root, unless that root is a folder of
    other data, where writing synthetic sets would mix them into it."""
    if holds_other_data(root):
        return (f"{root} holds other files, so it is not a data root of this tool (a folder of "
                f"{', '.join(d.folder + '/' for d in catalog.DATASETS)}); run ./prepare.sh {action} (it prepares "
                f"data/) and pass --data-root data")
    r = root_option(root)
    return f"run ./prepare.sh{r} --synthetic or ./prepare.sh{r} {action}"


def remake_hint(root: str | os.PathLike, dataset: str) -> str:
    """How to make a damaged copy of ``dataset`` under ``root`` whole again: write a synthetic set anew,
    prepare the download again, or upload it again to a bucket."""
    root = str(root)
    entry = catalog.get(dataset)
    if root.startswith("s3://"):
        return f"upload it again with ./prepare.sh --root DATA_ROOT --upload {root}"
    r = root_option(root)
    if is_synthetic(Path(root) / entry.folder):
        return f"make it again with ./prepare.sh{r} --synthetic --force"
    return f"prepare it again from its download with ./prepare.sh{r} {entry.prepare}"
