"""``prepare.sh --upload s3://B/P --shards``: each dataset under a data root as WebDataset tar shards
under ``P/shards/<dataset folder>/``, plus the ``index.json`` that ``shard_index`` describes.

Samples are the local reader's, each as the files it reads: ``<key>.jpg`` + ``<key>.png`` (Pets:
image and trimap), ``<key>.<jpg|jpeg|png>`` + ``<key>.cls`` (ImageFolder, CUB: the file as it is;
CIFAR: each 32x32 image encoded as a lossless PNG), key = the sample's index in the local split. The
training split is written in a seeded random order (samples mixed across shards: a shard then holds
all classes, so a reader's shuffle buffer has less to do), the validation split in index order. A
shard is closed once it reaches the size asked for. Tar headers carry no time or owner, so the same
data gives the same bytes, and a shard already in the bucket with the same MD5 is not sent again.
The index goes up last, once every shard it names is there.
"""
from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from pathlib import Path
from typing import Any, Callable, Iterator

from study.core.config import ConfigError, RunConfig
from study.core.catalog import DATASETS, Dataset
from study.data.bundle import reader
from study.data.s3.client import client_for, probe
from study.data.s3.errors import s3_errors
from study.data.s3.shard_index import FORMAT, INDEX, SPLITS, VERSION, sample_key, shards_key, shards_url
from study.data.s3.urls import parse_url, resolve_endpoint

DEFAULT_SHARD_MB = 100
MAX_SHARD_MB = 4096  # one PUT (the ETag is then the MD5 the index is checked against) takes up to 5 GiB
ORDER_SEED = 0


def sample_files(ds: Any, entry: Dataset) -> tuple[int, Callable[[int], dict[str, bytes]], list[str]]:
    """(count, index -> the sample's members, class names) of a split opened by the local reader."""
    if entry.task == "segment":  # torchvision's OxfordIIITPet: image and trimap paths per sample
        return (len(ds), lambda i: {"jpg": Path(ds._images[i]).read_bytes(), "png": Path(ds._segs[i]).read_bytes()},
                list(entry.classes))
    if hasattr(ds, "samples"):  # ImageFolder, CUB: (path, class index)
        def files(i: int) -> dict[str, bytes]:
            path, target = ds.samples[i]
            ext = Path(path).suffix.lstrip(".").lower() or "jpg"
            return {ext: Path(path).read_bytes(), "cls": str(int(target)).encode()}
        return len(ds.samples), files, list(ds.classes)

    def pixels(i: int) -> dict[str, bytes]:  # CIFAR: arrays in memory, each image as a lossless PNG
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(ds.data[i]).save(buf, "PNG", compress_level=1)
        return {"png": buf.getvalue(), "cls": str(int(ds.targets[i])).encode()}
    return len(ds.data), pixels, list(ds.classes)


def tar_shards(count: int, files: Callable[[int], dict[str, bytes]], order: list[int], split: str,
               shard_bytes: int) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """(tar bytes, index entry) per shard of the samples in ``order``."""
    pos = 0
    for k in range(10**6):
        if pos >= len(order):
            return
        buf = io.BytesIO()
        samples, offsets = [], []
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            while pos < len(order) and (not samples or buf.tell() < shard_bytes):
                i = order[pos]
                samples.append(i)
                offsets.append(buf.tell())
                for ext, data in files(i).items():
                    info = tarfile.TarInfo(f"{sample_key(i)}.{ext}")
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    tar.addfile(info, io.BytesIO(data))
                pos += 1
            offsets.append(buf.tell())
        data = buf.getvalue()
        yield data, {"name": f"{split}-{k:06d}.tar", "size": len(data), "md5": hashlib.md5(data).hexdigest(),
                     "samples": samples, "offsets": offsets}


def upload_shards(root: str, url: str, endpoint: str, shard_mb: float, say: Callable[[str], None]) -> None:
    """Write every dataset under ``root`` as shards to ``url``; ConfigError (one line) on bad input."""
    if not 0 < shard_mb <= MAX_SHARD_MB:
        raise ConfigError(f"--shard-size must be more than 0 and at most {MAX_SHARD_MB} MB, got {shard_mb:g}")
    loc = parse_url(url)
    endpoint = resolve_endpoint(endpoint)
    present = [d for d in DATASETS if (Path(root) / d.folder).is_dir()]
    if not present:
        raise ConfigError(f"nothing to upload: no dataset folder under {root}; run ./prepare.sh --root {root} "
                          f"--synthetic (or --cifar/--cub/--pets/--imagenet) first")
    probe(endpoint, loc.bucket, loc.key() + "/" if loc.prefix else "", f"checking bucket {loc.bucket!r}")
    client = client_for(endpoint)
    for entry in present:
        base_key, base_url = shards_key(loc, entry.name), shards_url(loc, entry.name)
        existing: dict[str, tuple[int, str]] = {}
        with s3_errors(f"listing {base_url}/", endpoint, loc.bucket):
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=base_key + "/"):
                for obj in page.get("Contents", ()):
                    existing[obj["Key"]] = (int(obj["Size"]), str(obj.get("ETag", "")).strip('"'))
        doc: dict[str, Any] = {"format": FORMAT, "version": VERSION, "dataset": entry.name, "task": entry.task,
                               "splits": {}}
        sent = kept = total = 0
        for train in (True, False):
            split = SPLITS[train]
            cfg = RunConfig(task=entry.task, dataset=entry.name, data_root=str(root))
            ds = reader(entry.name).open_split(cfg, train)
            count, files, classes = sample_files(ds, entry)
            doc["classes"] = classes
            order = list(range(count))
            if train:
                random.Random(ORDER_SEED).shuffle(order)
            shards = []
            for data, item in tar_shards(count, files, order, split, int(shard_mb * 2**20)):
                shards.append(item)
                total += len(data)
                if existing.get(f"{base_key}/{item['name']}") == (item["size"], item["md5"]):
                    kept += 1
                    continue
                with s3_errors(f"uploading {base_url}/{item['name']}", endpoint, loc.bucket):
                    client.put_object(Bucket=loc.bucket, Key=f"{base_key}/{item['name']}", Body=data)
                sent += 1
            doc["splits"][split] = {"count": count, "shards": shards}
        with s3_errors(f"uploading {base_url}/{INDEX}", endpoint, loc.bucket):
            client.put_object(Bucket=loc.bucket, Key=f"{base_key}/{INDEX}", Body=json.dumps(doc).encode(),
                              ContentType="application/json")
        n = {s: doc["splits"][s]["count"] for s in SPLITS.values()}
        say(f"{entry.title}: {n['train']} train + {n['val']} val samples in {sent + kept} shards "
            f"({total / 2**20:.1f} MiB) at {base_url}/; {sent} sent, {kept} already there unchanged")
