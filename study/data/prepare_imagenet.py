"""``prepare.sh --imagenet DIR``: link an extracted ImageNet (ILSVRC) into ``<root>/imagenet``.

Accepted as the downloads ship it: Kaggle's top folder (``LOC_*.csv``, ``LOC_synset_mapping.txt``
and ``ILSVRC/`` side by side), ``ILSVRC/`` itself (``Data/CLS-LOC/{train,val}``), or ``CLS-LOC/``.
The labels of a flat val folder (``LOC_val_solution.csv``) and the class names
(``LOC_synset_mapping.txt``: "n01440764 tench, Tinca tinca") are looked for beside each of those
folders, or given with ``--imagenet-labels FILE`` (either kind, told apart by content). Nothing is
copied but the small mapping file: ``train`` (and a val already split by class) are links, a flat val
becomes class folders of links.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Callable

from study.core.config import ConfigError
from study.core.catalog import IMAGEFOLDER
from study.data.synthetic import is_synthetic

SOLUTION = "LOC_val_solution.csv"
SYNSETS = "LOC_synset_mapping.txt"
SOURCE = "SOURCE"  # written next to the links: what they point at (and that prepare.sh made them)


def find_cls_loc(src: Path) -> Path | None:
    """The CLS-LOC folder (holding train/) under a Kaggle top folder, an ILSVRC folder, or itself."""
    for c in (src / "ILSVRC" / "Data" / "CLS-LOC", src / "Data" / "CLS-LOC", src):
        if (c / "train").is_dir():
            return c
    return None


def label_file_kind(path: Path) -> str:
    """SOLUTION or SYNSETS, read from the file's first line; ConfigError for anything else."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            first = f.readline().strip()
    except OSError as e:
        raise ConfigError(f"--imagenet-labels {path}: {e.strerror or type(e).__name__}") from None
    if first.replace(" ", "").startswith("ImageId,PredictionString"):
        return SOLUTION
    head = first.split(maxsplit=1)
    if head and head[0][:1] == "n" and head[0][1:].isdigit():
        return SYNSETS
    raise ConfigError(f"--imagenet-labels {path} is neither {SOLUTION} (ImageId,PredictionString) nor {SYNSETS} "
                      f"(lines 'n01440764 tench, Tinca tinca')")


def read_synsets(path: Path | str) -> dict[str, str]:
    """wnid -> "wnid first-name" ("n01440764 tench"), from a LOC_synset_mapping.txt (a path, or its text)."""
    names = {}
    text = path if isinstance(path, str) else path.read_text(encoding="utf-8", errors="replace")
    for line in text.splitlines():
        wnid, _, words = line.strip().partition(" ")
        if wnid:
            names[wnid] = f"{wnid} {words.split(',')[0].strip()}".strip()
    return names


def prepare_imagenet(root: Path, source: str, labels: list[str], say: Callable[[str], None]) -> None:
    src = Path(source).resolve()
    if not src.is_dir():
        raise ConfigError(f"--imagenet {source}: no such folder (give the download's top folder, ILSVRC/ or CLS-LOC/)")
    cls = find_cls_loc(src)
    if cls is None:
        raise ConfigError(f"no ImageNet train folder under {source}: looked for {source}/ILSVRC/Data/CLS-LOC/train "
                          f"(Kaggle's download), {source}/Data/CLS-LOC/train (ILSVRC/) and {source}/train (CLS-LOC/)")
    if not any(p.is_dir() for p in (cls / "train").iterdir()):
        raise ConfigError(f"{cls / 'train'} has no class folders")
    val = cls / "val"
    if not val.is_dir():
        raise ConfigError(f"no ImageNet val folder at {val}")
    # Beside CLS-LOC, Data, ILSVRC and the download's top folder, nearest first.
    places = list(dict.fromkeys([cls, cls.parent, cls.parent.parent, cls.parent.parent.parent, src]))
    given = {label_file_kind(Path(p)): Path(p) for p in labels}
    found = {kind: given.get(kind) or next((d / kind for d in places if (d / kind).is_file()), None)
             for kind in (SOLUTION, SYNSETS)}
    looked = ", ".join(str(d) for d in places)
    val_has_classes = any(p.is_dir() for p in val.iterdir())
    if not val_has_classes and found[SOLUTION] is None:
        raise ConfigError(f"{val} is flat and no {SOLUTION} labels it: looked in {looked}; pass "
                          f"--imagenet-labels FILE with its path")

    target = root / IMAGEFOLDER.folder
    if target.exists() or target.is_symlink():
        if is_synthetic(target) or (target / SOURCE).is_file():
            shutil.rmtree(target)  # synthetic data, or links this command made before
        else:
            raise ConfigError(f"{target} already exists and was not made by prepare.sh; move it away first")
    target.mkdir(parents=True)
    (target / "train").symlink_to(cls / "train", target_is_directory=True)
    if val_has_classes:
        (target / "val").symlink_to(val, target_is_directory=True)
    else:
        n = 0
        with open(found[SOLUTION], newline="") as f:  # type: ignore[arg-type]
            for row in csv.DictReader(f):
                wnid = row["PredictionString"].split()[0]
                d = target / "val" / wnid
                d.mkdir(parents=True, exist_ok=True)
                (d / f"{row['ImageId']}.JPEG").symlink_to(val / f"{row['ImageId']}.JPEG")
                n += 1
        say(f"{IMAGEFOLDER.title}: split {n} val images into class folders of links using {found[SOLUTION]}")
    if found[SYNSETS] is not None:
        shutil.copyfile(found[SYNSETS], target / SYNSETS)
        say(f"{IMAGEFOLDER.title}: class names from {found[SYNSETS]} (e.g. "
            f"{next(iter(read_synsets(target / SYNSETS).values()), '')!r})")
    else:
        say(f"{IMAGEFOLDER.title}: no {SYNSETS} in {looked}: classes are named by WordNet id (pass "
            f"--imagenet-labels FILE to name them)")
    (target / SOURCE).write_text(json.dumps({"source": str(src)}) + "\n")
    say(f"{IMAGEFOLDER.title}: {target} now points at {cls}")
