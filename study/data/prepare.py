"""Datasets on disk: write synthetic stand-ins, extract and verify real archives, upload to S3.

    ./prepare.sh --synthetic                              # every synthetic set under data/
    ./prepare.sh --cifar cifar-10-python.tar.gz           # extract + MD5-check the release (or CIFAR-100's)
    ./prepare.sh --no-verify                              # accept CIFAR copies whose MD5s differ (reports say so)
    ./prepare.sh --cub CUB_200_2011.tgz                   # extract CUB-200-2011, check its index files
    ./prepare.sh --pets images.tar.gz annotations.tar.gz  # extract, drop images that do not decode
    ./prepare.sh --imagenet /datasets/imagenet            # link Kaggle's ImageNet (or ILSVRC/, CLS-LOC/) in
    ./prepare.sh --upload s3://bucket/prefix              # copy data/ to object storage
    ./prepare.sh --upload s3://bucket/prefix --shards     # ... as WebDataset tar shards + an index

Actions combine and run in that order. Bad input (missing or broken archive, wrong layout) is one
line on stderr and exit status 2, never a traceback. Archives are extracted with tarfile's "data"
filter: no member may land outside the target folder, no links out, no device files.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tarfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from study.core.config import ConfigError
from study.core import catalog
from study.data import s3_package, synthetic
from study.core.catalog import CIFAR10, CIFAR100, CUB200, OXFORD_PETS
from study.data.integrity import accept, is_unchecked, root_option
from study.data.prepare_imagenet import prepare_imagenet
from study.data.synthetic import is_synthetic


class PrepareError(Exception):
    """Bad input: reported as one line on stderr, exit status 2."""


def say(msg: str) -> None:
    print(msg, flush=True)


def _line(e: BaseException) -> str:
    """An exception as one line: its message with line breaks folded, or its type's name."""
    text = "; ".join(part.strip() for part in str(e).splitlines() if part.strip())
    return text or type(e).__name__


# --------------------------------------------------------------------------------------------------
# synthetic
# --------------------------------------------------------------------------------------------------
def make_synthetic(root: Path, force: bool = False, seed: int = 0) -> None:
    for dataset in catalog.DATASETS:
        target, title = root / dataset.folder, dataset.title
        if target.exists() or target.is_symlink():
            if not is_synthetic(target):
                say(f"{title}: {target} holds non-synthetic data; left alone")
                continue
            if not force:
                say(f"{title}: {target} already present; skipped (--force rewrites it)")
                continue
        writer = synthetic.WRITERS[dataset.name]
        t0 = time.perf_counter()
        writer.write(root, seed=seed)
        say(f"{title}: wrote synthetic {writer.contents} to {target} in {time.perf_counter() - t0:.1f} s")


# --------------------------------------------------------------------------------------------------
# archives
# --------------------------------------------------------------------------------------------------
def _open_tar(path: str) -> tuple[tarfile.TarFile, list[str]]:
    p = Path(path)
    if not p.is_file():
        raise PrepareError(f"archive not found: {path}")
    try:
        tar = tarfile.open(p, "r:*")
        names = tar.getnames()  # reads the whole archive: a truncated file fails here, not halfway
    except tarfile.ReadError:
        raise PrepareError(f"{path} is not a readable tar archive (plain, gz, bz2 or xz)") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise PrepareError(f"cannot read archive {path}: {_line(e)}") from None
    return tar, [n[2:] if n.startswith("./") else n for n in names]


def _extract(tar: tarfile.TarFile, dest: Path, path: str, under: str = "") -> None:
    """Extract ``tar`` into ``dest`` (only the members under the folder ``under``, when given)."""
    dest.mkdir(parents=True, exist_ok=True)
    members = [m for m in tar.getmembers() if m.name.removeprefix("./").startswith(under + "/")] if under else None
    try:
        tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise PrepareError(f"cannot extract {path} into {dest}: {_line(e)}") from None
    finally:
        tar.close()


def _drop_synthetic(target: Path, title: str) -> None:
    if target.exists() and is_synthetic(target):
        shutil.rmtree(target)
        say(f"{title}: removed the synthetic stand-in at {target}")


def prepare_cifar(root: Path, archive: str, verify: bool = True) -> None:
    """Extract the CIFAR-10 or CIFAR-100 python release (whichever ``archive`` holds) and verify its
    MD5s; ``verify=False`` marks the folder UNVERIFIED instead, for a copy the user accepts as it is."""
    tar, names = _open_tar(archive)
    from study.data.cifar import ARCHIVES as ARCHIVE_NAMES, READERS, check_folder, release_files  # torchvision: on use

    held = {d: [f"{catalog.get(d).folder}/{n}" for n, _ in release_files(d)] for d in READERS}
    found = [d for d, need in held.items() if all(n in names for n in need)]
    if not found:
        tar.close()
        first = {d: next(n for n in need if n not in names) for d, need in held.items()}
        raise PrepareError(f"{archive} is not a CIFAR python release (CIFAR-10 needs {first[CIFAR10.name]}, "
                           f"CIFAR-100 {first[CIFAR100.name]})")
    for dataset in found:
        entry = catalog.get(dataset)
        _drop_synthetic(root / entry.folder, entry.title)
    t0 = time.perf_counter()
    _extract(tar, root, archive)
    for dataset in found:
        entry, folder = catalog.get(dataset), root / catalog.get(dataset).folder
        if not verify:
            accept(folder, f"extracted from {archive} with --no-verify")
        try:
            check_folder(root, dataset)  # MD5s against the official list, or (unverified) the vetting
        except ConfigError as e:
            if not verify and is_unchecked(folder):
                raise
            # Extracting the same archive again would fail the same way: say how to accept it instead.
            bad = str(e).split(" (MD5")[0].removeprefix(f"corrupt {entry.title} file ")
            raise PrepareError(f"{archive} is not the official {entry.title} release ({bad} has another MD5); it is "
                               f"extracted to {folder}: to use it as it is, mark it with ./prepare.sh"
                               f"{root_option(root)} --no-verify, or extract the official archive "
                               f"({ARCHIVE_NAMES[dataset]}) instead") from None
        how = ("marked UNVERIFIED: the MD5 check is skipped, every pickle vetted, and reports say so" if not verify
               else "MD5s match the official release")
        say(f"{entry.title}: extracted {archive} to {folder}; {how} ({time.perf_counter() - t0:.1f} s)")


def accept_folders(root: Path) -> None:
    """``--no-verify`` alone: mark the release folders under ``root`` that fail their MD5 check UNVERIFIED."""
    from study.data.cifar import READERS, check_folder

    marked = 0
    for dataset in READERS:
        entry, folder = catalog.get(dataset), root / catalog.get(dataset).folder
        if not folder.is_dir() or is_unchecked(folder):
            continue
        try:
            check_folder(root, dataset)
            say(f"{entry.title}: {folder} matches the official release; left as it is")
        except ConfigError:
            accept(folder, "marked with ./prepare.sh --no-verify")
            say(f"{entry.title}: marked {folder} UNVERIFIED: its MD5 check is skipped from now on (every pickle is "
                f"still vetted) and reports say so")
            marked += 1
    if not marked:
        say(f"--no-verify: no release folder under {root} fails its MD5 check; nothing marked")


def prepare_cub(root: Path, archive: str) -> None:
    """Extract CUB_200_2011/ of the published ``CUB_200_2011.tgz`` (its top-level attributes.txt stays
    out of the data root) and check that its index files parse and name only images that exist."""
    tar, names = _open_tar(archive)
    from study.data.cub import INDEX_FILES, read_index  # torchvision: imported only when needed

    missing = [n for n in INDEX_FILES if f"{CUB200.folder}/{n}" not in names]
    if missing:
        tar.close()
        raise PrepareError(f"{archive} is not the {CUB200.title} release (no {CUB200.folder}/{missing[0]})")
    target = root / CUB200.folder
    _drop_synthetic(target, CUB200.title)
    t0 = time.perf_counter()
    _extract(tar, root, archive, under=CUB200.folder)
    ix = read_index(lambda name: (target / name).read_text(encoding="utf-8", errors="replace"), str(target),
                    again=f"{archive} is damaged: download it again")
    lost = [p for p in ix.paths.values() if not (target / "images" / p).is_file()]
    if lost:
        raise PrepareError(f"{archive} lacks {len(lost)} images that {CUB200.folder}/images.txt lists (first: "
                           f"{lost[0]}); the archive is damaged: download it again")
    n_train = sum(ix.train.values())
    say(f"{CUB200.title}: extracted {archive} to {target}: {len(ix.classes)} classes, {n_train} train + "
        f"{len(ix.paths) - n_train} test images ({time.perf_counter() - t0:.1f} s)")


def _check_image(path: str) -> tuple[str, str]:
    """(why the file is dropped, what the reader converts), each '' when nothing. Only a file that
    does not decode is dropped: grayscale, CMYK, RGBA or a PNG under a .jpg name decode, and the
    reader converts them to RGB as torchvision's OxfordIIITPet does."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            fmt = im.format
            im.verify()
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            im.convert("RGB")
    except Exception as e:  # PIL raises many types for broken files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f"does not decode: {msg}", ""
    if fmt == "JPEG" and mode == "RGB":
        return "", ""
    return "", " ".join(t for t in (mode, "" if fmt == "JPEG" else f"{fmt}") if t)


def clean_pets(folder: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Drop the images that do not decode from disk and from the split files; keep every other one.

    Returns ([(image file name, why dropped)], [(image file name, what the reader converts)]).
    Split-file lines whose image is absent are dropped as well (reason "missing").
    """
    images = sorted((folder / "images").glob("*.jpg"))
    if len(images) > 200 and (os.cpu_count() or 1) > 1:
        with ProcessPoolExecutor() as pool:
            checks = list(pool.map(_check_image, map(str, images), chunksize=64))
    else:
        checks = [_check_image(str(p)) for p in images]
    dropped = [(p.name, why) for p, (why, _) in zip(images, checks) if why]
    converted = [(p.name, what) for p, (why, what) in zip(images, checks) if what and not why]
    for name, _ in dropped:
        (folder / "images" / name).unlink()
    gone = {Path(name).stem for name, _ in dropped}
    for split in ("trainval.txt", "test.txt"):
        path = folder / "annotations" / split
        kept = []
        for line in path.read_text().splitlines(keepends=True):
            stem = line.split()[0] if line.strip() else ""
            if not stem or stem.startswith("#"):
                kept.append(line)
            elif stem in gone:
                continue
            elif not (folder / "images" / f"{stem}.jpg").is_file():
                dropped.append((f"{stem}.jpg", "missing"))
                gone.add(stem)
            else:
                kept.append(line)
        tmp = path.with_suffix(".txt.tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)
    return dropped, converted


def prepare_pets(root: Path, archives: list[str]) -> None:
    opened = [_open_tar(a) for a in archives]
    kinds = {}
    for (tar, names), path in zip(opened, archives):
        if any(n.startswith("images/") for n in names):
            kinds["images"] = (tar, path)
        elif "annotations/trainval.txt" in names and "annotations/test.txt" in names:
            kinds["annotations"] = (tar, path)
    if set(kinds) != {"images", "annotations"}:
        for tar, _ in opened:
            tar.close()
        raise PrepareError(f"--pets needs the Oxford-IIIT Pet images and annotations archives "
                           f"(images/*.jpg and annotations/trainval.txt); got {' '.join(archives)}")
    target = root / OXFORD_PETS.folder
    _drop_synthetic(target, OXFORD_PETS.title)
    t0 = time.perf_counter()
    for tar, path in kinds.values():
        _extract(tar, target, path)
    say(f"{OXFORD_PETS.title}: extracted {' and '.join(archives)} to {target} ({time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    dropped, converted = clean_pets(target)
    n = len(list((target / "images").glob("*.jpg")))
    if dropped:
        listing = ", ".join(f"{name} ({why})" for name, why in dropped)
        say(f"{OXFORD_PETS.title}: dropped {len(dropped)} images that do not decode from disk and the split files: "
            f"{listing}")
    if converted:
        listing = ", ".join(f"{name} ({what})" for name, what in converted)
        say(f"{OXFORD_PETS.title}: kept {len(converted)} images that are not RGB JPEGs, which the reader converts "
            f"to RGB as torchvision's does: {listing}")
    say(f"{OXFORD_PETS.title}: {n} images kept, the splits as published otherwise ({time.perf_counter() - t0:.1f} s "
        f"to scan)")


def upload(root: Path, url: str, endpoint: str, shards: bool = False, shard_mb: float | None = None) -> None:
    """Per-sample objects, or tar shards of ``shard_mb`` (None: the default) with ``shards``."""
    if not url.startswith("s3://") or len(url) <= len("s3://"):
        raise PrepareError(f"--upload needs an s3://bucket/prefix URL, got {url!r}")
    s3 = s3_package("S3 upload")
    t0 = time.perf_counter()
    try:
        if shards:
            from study.data.s3.shard_write import DEFAULT_SHARD_MB, upload_shards

            upload_shards(str(root), url, endpoint, DEFAULT_SHARD_MB if shard_mb is None else shard_mb, say)
        else:
            s3.upload(str(root), url, endpoint)
    except (ConfigError, PrepareError):
        raise
    except Exception as e:  # credentials, network, missing bucket: one line, not a traceback
        raise PrepareError(f"upload of {root} to {url} failed: {type(e).__name__}: {_line(e)}") from None
    say(f"uploaded {root} to {url} in {time.perf_counter() - t0:.1f} s")


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prepare.sh", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[2:]))
    p.add_argument("--root", default="data", help="folder the datasets live in (default: data)")
    p.add_argument("--synthetic", action="store_true", help="write a small synthetic set of every dataset (CIFAR-10/100, "
                   "CUB-200-2011, Oxford-IIIT Pet, ImageFolder) in its real format (skips ones already present)")
    p.add_argument("--force", action="store_true", help="with --synthetic: rewrite synthetic sets already present")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic sets (default 0)")
    p.add_argument("--cifar", metavar="ARCHIVE", help="extract cifar-10-python.tar.gz or cifar-100-python.tar.gz and "
                   "verify its MD5s")
    p.add_argument("--no-verify", action="store_true", help="accept a CIFAR copy whose MD5s differ from the release: "
                   "with --cifar, extract it unverified; alone, mark the folders under --root that fail their check "
                   "(an UNVERIFIED file: the check is skipped, pickles still vetted, reports say so)")
    p.add_argument("--cub", metavar="ARCHIVE", help="extract CUB_200_2011.tgz (CUB-200-2011 as published) and check "
                   "its index files")
    p.add_argument("--pets", nargs=2, metavar=("IMAGES_TAR", "ANNOTATIONS_TAR"),
                   help="extract the Oxford-IIIT Pet images.tar.gz and annotations.tar.gz; drop images that do not "
                   "decode (grayscale, CMYK and RGBA ones are kept: the reader converts them to RGB)")
    p.add_argument("--imagenet", metavar="DIR", help="link <root>/imagenet to an extracted ImageNet: Kaggle's download "
                   "folder, its ILSVRC/ or Data/CLS-LOC/ (labels and class names found beside them)")
    p.add_argument("--imagenet-labels", metavar="FILE", action="append", default=[],
                   help="with --imagenet: LOC_val_solution.csv or LOC_synset_mapping.txt where they are not beside "
                   "the folder (repeatable)")
    p.add_argument("--upload", metavar="S3_URL", help="copy <root> to s3://bucket/prefix after the other actions")
    p.add_argument("--shards", action="store_true", help="with --upload: write each dataset as WebDataset tar "
                   "shards (<key>.jpg with <key>.cls or <key>.png) plus an index, under PREFIX/shards/, instead of "
                   "one object per file; a study reads them in order")
    p.add_argument("--shard-size", type=float, metavar="MB", help="with --shards: close a shard once it "
                   "holds this many MB (default 100)")
    p.add_argument("--s3-endpoint", default=os.environ.get("AWS_ENDPOINT_URL", ""),
                   help="endpoint URL of an S3-compatible store (default: $AWS_ENDPOINT_URL, else AWS)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    root = Path(args.root)
    shard_option = "--shards" if args.shards else "--shard-size" if args.shard_size is not None else ""
    if shard_option and not (args.upload and args.shards):
        print(f"prepare: {shard_option} goes with --upload s3://bucket/prefix{'' if args.shards else ' --shards'}",
              file=sys.stderr)
        return 2
    if not (args.synthetic or args.cifar or args.cub or args.pets or args.imagenet or args.upload or args.no_verify):
        print("prepare: nothing to do; pass --synthetic, --cifar, --cub, --pets, --imagenet, --no-verify or --upload "
              "(see --help)", file=sys.stderr)
        return 2
    try:
        if root.exists() and not root.is_dir():
            raise PrepareError(f"--root {root} is not a folder")
        if args.synthetic:
            make_synthetic(root, force=args.force, seed=args.seed)
        if args.cifar:
            prepare_cifar(root, args.cifar, verify=not args.no_verify)
        elif args.no_verify:
            accept_folders(root)
        if args.cub:
            prepare_cub(root, args.cub)
        if args.pets:
            prepare_pets(root, args.pets)
        if args.imagenet:
            prepare_imagenet(root, args.imagenet, args.imagenet_labels, say)
        if args.upload:
            upload(root, args.upload, args.s3_endpoint, args.shards, args.shard_size)
    except (PrepareError, ConfigError, FileExistsError) as e:
        print(f"prepare: {_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prepare: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
