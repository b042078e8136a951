"""``prepare.sh --upload``: copy the datasets under a data root to ``s3://bucket/prefix`` in their
native layout (``<prefix>/cifar-10-batches-py/data_batch_1``, ``<prefix>/oxford-iiit-pet/images/*.jpg``,
``<prefix>/imagenet/train/<class>/*.JPEG``, ...), skipping objects already there with the same content.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from study.core.config import ConfigError
from study.core.catalog import DATASETS, IMAGEFOLDER
from study.data.s3.cache import etag_matches
from study.data.s3.client import TRANSFER_THREADS, client_for, probe
from study.data.s3.errors import is_s3_error, s3_errors
from study.data.s3.urls import parse_url, resolve_endpoint

MULTIPART_THRESHOLD = 64 * 2**20
# Written by prepare.sh --imagenet next to its links; a local path, meaningless in a bucket.
UPLOAD_SKIP = {f"{IMAGEFOLDER.folder}/SOURCE"}


def local_files(root: str | os.PathLike) -> list[tuple[Path, str]]:
    """(file, key relative to the prefix) of every dataset file under ``root``, following links (an
    ``imagenet`` prepared from ILSVRC is a tree of links)."""
    root = Path(root)
    out: list[tuple[Path, str]] = []
    for dataset in DATASETS:
        top = root / dataset.folder
        if not top.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):  # staging leftovers, editor files
                    continue
                path = Path(dirpath) / name
                rel = path.relative_to(root).as_posix()
                if rel not in UPLOAD_SKIP and path.is_file():
                    out.append((path, rel))
    return out


def upload(root: str, url: str, endpoint: str) -> None:
    """Copy the datasets under ``root`` to ``url`` (s3://bucket/prefix), native layout, skipping
    objects already there with the same content. Rich progress bar on stderr."""
    from boto3.s3.transfer import TransferConfig
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    loc = parse_url(url)
    endpoint = resolve_endpoint(endpoint)
    files = local_files(root)
    if not files:
        folders = ", ".join(d.folder for d in DATASETS[:-1]) + f" or {DATASETS[-1].folder}"
        raise ConfigError(f"nothing to upload: no {folders} folder under {root}; run ./prepare.sh --root {root} "
                          f"--synthetic (or --cifar/--cub/--pets/--imagenet) first")
    prefix = loc.key() + "/" if loc.prefix else ""
    probe(endpoint, loc.bucket, prefix, f"checking bucket {loc.bucket!r}")
    client = client_for(endpoint)
    existing: dict[str, dict] = {}
    with s3_errors(f"listing {loc.url()}", endpoint, loc.bucket):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix):
            for obj in page.get("Contents", ()):
                existing[obj["Key"]] = obj
    todo = []
    for path, rel in files:
        key = loc.key(rel)
        old = existing.get(key)
        if old is not None and int(old["Size"]) == path.stat().st_size and etag_matches(path, old.get("ETag", "")):
            continue
        todo.append((path, key))
    total = sum(p.stat().st_size for p, _ in todo)
    transfer = TransferConfig(use_threads=False, multipart_threshold=MULTIPART_THRESHOLD,
                              multipart_chunksize=MULTIPART_THRESHOLD)
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TextColumn("{task.fields[files]}"), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"upload to {loc.url()}", total=total or 1, files=f"0/{len(todo)} files")
        done = [0]
        lock = threading.Lock()

        def one(item: tuple[Path, str]) -> None:
            path, key = item
            client.upload_file(str(path), loc.bucket, key, Config=transfer,
                               Callback=lambda n: progress.advance(task, n))
            with lock:
                done[0] += 1
                progress.update(task, files=f"{done[0]}/{len(todo)} files")

        with s3_errors(f"uploading to {loc.url()}", endpoint, loc.bucket):
            try:
                if todo:
                    with ThreadPoolExecutor(min(TRANSFER_THREADS, len(todo))) as pool:
                        list(pool.map(one, todo))
            except Exception as e:  # noqa: BLE001 — s3transfer wraps client errors in its own type
                cause = e.__cause__ or e.__context__
                if not is_s3_error(e) and cause is not None and is_s3_error(cause):
                    raise cause from None
                raise
        if not todo:
            progress.update(task, completed=1)
    print(f"{len(todo)} of {len(files)} files uploaded ({total / 2**20:.1f} MiB); "
          f"{len(files) - len(todo)} already there unchanged", flush=True)
