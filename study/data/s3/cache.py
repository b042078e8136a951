"""The local cache (``--s3-cache DIR``): opening a split downloads the objects it needs into
``DIR/<bucket>/<key>`` (only those missing or changed: size and LastModified, as ``aws s3 sync``
compares), then the local reader of the dataset reads the copy.

No object key may place a file outside the cache: every key is checked before anything is written.
"""
from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from study.core.config import ConfigError, RunConfig
from study.core import catalog
from study.data.bundle import reader
from study.data.checksum import file_md5
from study.data.s3.client import TRANSFER_THREADS, ObjectInfo, client_for, read_object
from study.data.s3.datasets import pets_split_ids
from study.data.s3.errors import S3ReadError, retry, s3_errors
from study.data.s3.urls import Location, plain_bucket


def cache_path(cache_root: str | os.PathLike, bucket: str, key: str) -> Path:
    """Where object ``bucket/key`` lives in the cache; ConfigError for any key that could land outside
    it (absolute, "..", ".", empty parts, backslashes, NUL) or that resolves outside it (links)."""
    def refuse(why: str) -> ConfigError:
        return ConfigError(f"refusing S3 object key {key!r} from bucket {bucket!r}: {why}, so it could be "
                           f"written outside the cache folder {cache_root}")

    if not plain_bucket(bucket):
        raise refuse("the bucket name is not a plain S3 bucket name")
    if not key or key.startswith("/") or "\\" in key or "\x00" in key or re.match(r"^[A-Za-z]:", key):
        raise refuse("it is empty, absolute or holds a backslash/NUL")
    if any(p in ("", ".", "..") for p in key.split("/")):
        raise refuse("it has an empty, '.' or '..' part")
    root = Path(cache_root).resolve()
    dest = (root / bucket / key).resolve()
    if not dest.is_relative_to(root / bucket) or dest == root / bucket:
        raise refuse("it resolves outside the cache")
    return dest


def is_fresh(path: Path, info: ObjectInfo) -> bool:
    """The cached copy has the object's size and LastModified (what a download sets as its mtime)."""
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_size == info.size and abs(st.st_mtime - info.mtime) < 1.0


def etag_matches(path: Path, etag: str) -> bool:
    """The file has the content an object's ETag names (sizes are compared before this)."""
    etag = etag.strip('"')
    if "-" in etag or len(etag) != 32:  # multipart ETag: not an MD5 of the content; size had to do
        return True
    return file_md5(path) == etag


def download(endpoint: str, bucket: str, key: str, dest: Path, info: ObjectInfo) -> int:
    """GET ``key`` into ``dest`` atomically (temporary name, then rename); mtime = LastModified."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.part")
    client = client_for(endpoint)

    def fetch() -> None:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        with open(tmp, "wb") as fh:
            for chunk in body.iter_chunks(1 << 20):
                fh.write(chunk)

    try:
        retry(fetch)
        os.utime(tmp, (info.mtime, info.mtime))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return info.size


def sync_to_cache(endpoint: str, bucket: str, listing: dict[str, ObjectInfo], cache_root: str | os.PathLike,
                  threads: int = TRANSFER_THREADS) -> tuple[int, int]:
    """Download every listed object missing or changed in the cache. Returns (objects, bytes) fetched.
    All keys are checked before anything is written."""
    dests = {key: cache_path(cache_root, bucket, key) for key in listing}
    todo = [k for k in listing if not is_fresh(dests[k], listing[k])]
    if not todo:
        return 0, 0
    client_for(endpoint)  # create it once here, not racing in the pool's threads
    with ThreadPoolExecutor(min(threads, len(todo))) as pool:
        sizes = list(pool.map(lambda k: download(endpoint, bucket, k, dests[k], listing[k]), todo))
    return len(todo), sum(sizes)


def split_keys(dataset: str, bucket: str, folder_key: str, listing: dict[str, ObjectInfo], train: bool,
               read_text: Callable[[str], str]) -> dict[str, ObjectInfo]:
    """The objects one split needs in the cache (what its local reader opens and checks)."""
    if dataset in (catalog.CIFAR10.name, catalog.CIFAR100.name):  # the reader checks every release file
        return listing
    if dataset == catalog.CUB200.name:  # the index files, and the images of this split
        from study.data import cub

        ix = cub.read_index(lambda name: read_text(f"{folder_key}/{name}"), f"s3://{bucket}/{folder_key}")
        mine = {f"{folder_key}/images/{ix.paths[i]}" for i in ix.paths if ix.train[i] == train}
        return {k: v for k, v in listing.items() if k in mine or not k.startswith(f"{folder_key}/images/")}
    if dataset == catalog.IMAGEFOLDER.name:
        other = f"{folder_key}/{'val' if train else 'train'}/"
        return {k: v for k, v in listing.items() if not k.startswith(other)}
    # pets: everything except the images/trimaps of the other split
    media = (f"{folder_key}/images/", f"{folder_key}/annotations/trimaps/")
    split_key = f"{folder_key}/annotations/{'trainval' if train else 'test'}.txt"
    ids = set(pets_split_ids(read_text(split_key), f"s3://{bucket}/{split_key}"))
    keep = {}
    for k, v in listing.items():
        if k.startswith(media):
            if k.rsplit("/", 1)[1].rsplit(".", 1)[0] not in ids:
                continue
        keep[k] = v
    return keep


def open_cached(cfg: RunConfig, loc: Location, endpoint: str, train: bool, listing: dict[str, ObjectInfo]) -> Any:
    """Sync what the split needs into the cache, then open it with the local reader."""
    entry = catalog.get(cfg.dataset)
    folder_key = loc.key(entry.folder)
    local_root = Path(cfg.s3_cache).resolve() / loc.bucket
    if loc.prefix:
        local_root /= loc.prefix

    def read_text(key: str) -> str:
        try:
            return read_object(endpoint, loc.bucket, key).decode("utf-8", "replace")
        except S3ReadError as e:
            raise ConfigError(f"incomplete {entry.title} at {loc.url(entry.folder)}/: {e}") from None

    needed = split_keys(cfg.dataset, loc.bucket, folder_key, listing, train, read_text)
    try:
        with s3_errors(f"downloading {loc.url(entry.folder)}/ into {cfg.s3_cache}", endpoint, loc.bucket):
            sync_to_cache(endpoint, loc.bucket, needed, cfg.s3_cache)
    except OSError as e:  # cache folder not writable, disk full (network errors arrive as botocore's)
        raise ConfigError(f"cannot fill the S3 cache {cfg.s3_cache}: {e.strerror or type(e).__name__}") from None
    return reader(cfg.dataset).open_split(cfg.replace(data_root=str(local_root), s3_cache=""), train)
