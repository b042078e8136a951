"""The index of a dataset's shards, and the checks that tie it to the objects in the bucket.

``prepare.sh --upload s3://B/P --shards`` writes each dataset as WebDataset tar shards under
``P/shards/<dataset folder>/`` (``train-000000.tar``, ..., ``val-000000.tar``, ...) and, last, an
``index.json`` beside them::

    {"format": "webdataset", "version": 1, "dataset": "oxford-pets", "task": "segment",
     "classes": [...], "members": ["jpg", "png"],
     "splits": {"train": {"count": N, "shards": [{"name": "train-000000.tar", "size": BYTES,
                "md5": HEX, "samples": [original index, ...], "offsets": [o_0, ..., o_n]}]}}}

A sample ``k`` of a shard is the tar members ``<key>.<ext>`` (key: its index in the local split,
zero-padded) between byte ``offsets[k]`` and ``offsets[k + 1]``, so any run of samples is one ranged
GET, and the shards stay plain tar files any WebDataset reader takes. Opening a split checks the
index against a listing of the shards (present, same size, same MD5 where the ETag is one) and
against the dataset asked for: a mismatch is a ConfigError, exit 2 before any stage.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from study.core.config import ConfigError
from study.core import catalog
from study.data.s3.urls import Location

FORMAT, VERSION = "webdataset", 1
SHARDS_FOLDER = "shards"  # under the prefix; the dataset's own folder (catalog) below it
INDEX = "index.json"
SPLITS = {True: "train", False: "val"}
KEY_DIGITS = 8


def sample_key(index: int) -> str:
    """The tar member stem of local sample ``index``: digits only (a WebDataset key may hold no dot)."""
    return f"{index:0{KEY_DIGITS}d}"


def shards_key(loc: Location, dataset: str, *parts: str) -> str:
    return loc.key(SHARDS_FOLDER, catalog.get(dataset).folder, *parts)


def shards_url(loc: Location, dataset: str, *parts: str) -> str:
    return loc.url(SHARDS_FOLDER, catalog.get(dataset).folder, *parts)


@dataclass(frozen=True)
class Shard:
    name: str
    size: int
    md5: str
    samples: tuple[int, ...]
    """The local index of each sample, in the order they lie in the shard."""
    offsets: tuple[int, ...]
    """Byte where each sample's first member starts, and where the last one ends (len = samples + 1)."""


def parse_index(text: str, url: str, dataset: str) -> dict[str, Any]:
    """The index as written, checked for shape and for being ``dataset``'s; ConfigError otherwise."""
    again = "write the shards again with ./prepare.sh --upload URL --shards"
    try:
        doc = json.loads(text)
    except ValueError:
        raise ConfigError(f"{url} is not a shard index (not JSON); {again}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("splits"), dict):
        raise ConfigError(f"{url} is not a shard index of this tool (no format/splits); {again}")
    if doc.get("version") != VERSION:
        raise ConfigError(f"{url} is a shard index of version {doc.get('version')!r}, this tool reads {VERSION}; "
                          f"{again}")
    if doc.get("dataset") != dataset:
        raise ConfigError(f"the shards at {url.rsplit('/', 1)[0]}/ hold {doc.get('dataset')!r}, not {dataset!r}: "
                          f"shards of another dataset; {again}")
    return doc


def split_shards(doc: dict[str, Any], train: bool, url: str) -> tuple[int, list[Shard]]:
    """(sample count, shards) of one split, every shard's offsets checked against its samples."""
    split = doc["splits"].get(SPLITS[train])
    if not isinstance(split, dict) or not isinstance(split.get("shards"), list):
        raise ConfigError(f"the shard index {url} has no {SPLITS[train]} split; write the shards again")
    shards = []
    for n, s in enumerate(split["shards"]):
        try:
            shard = Shard(str(s["name"]), int(s["size"]), str(s.get("md5", "")), tuple(map(int, s["samples"])),
                          tuple(map(int, s["offsets"])))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"the shard index {url} is damaged ({SPLITS[train]} shard {n}); write the shards "
                              f"again") from None
        offsets = list(shard.offsets)
        if "/" in shard.name or len(offsets) != len(shard.samples) + 1 or offsets != sorted(offsets) \
                or offsets[-1] > shard.size:
            raise ConfigError(f"the shard index {url} does not describe {shard.name} consistently (offsets, "
                              f"samples, size); write the shards again")
        shards.append(shard)
    count = sum(len(s.samples) for s in shards)
    if count != split.get("count"):
        raise ConfigError(f"the shard index {url} counts {split.get('count')} {SPLITS[train]} samples but its "
                          f"shards hold {count}; write the shards again")
    return count, shards


def check_against_listing(shards: list[Shard], listing: dict[str, tuple[int, str]], base_key: str,
                          base_url: str) -> None:
    """Every shard the index names is in the bucket with its size, and its MD5 where the ETag is one.
    ``listing``: key -> (size, ETag without quotes)."""
    for s in shards:
        got = listing.get(f"{base_key}/{s.name}")
        if got is None:
            raise ConfigError(f"shard {base_url}/{s.name} is missing (named in {base_url}/{INDEX}); write the "
                              f"shards again with ./prepare.sh --upload URL --shards")
        size, etag = got
        if size != s.size:
            how = "truncated" if size < s.size else "longer than indexed"
            raise ConfigError(f"shard {base_url}/{s.name} is {how} ({size} bytes, the index says {s.size}); write "
                              f"the shards again with ./prepare.sh --upload URL --shards")
        if s.md5 and len(etag) == 32 and "-" not in etag and etag != s.md5:
            raise ConfigError(f"shard {base_url}/{s.name} does not match its index (another MD5): the index and "
                              f"the shards were written apart; write the shards again")


def members(data: bytes, start: int = 0) -> list[tuple[str, bytes]]:
    """(name, content) of the regular-file members of a run of tar blocks (a ranged read that starts at
    a member's header). Only what the writer produces is read: ustar headers, regular files."""
    out = []
    pos, end = 0, len(data)
    while pos + 512 <= end:
        header = data[pos:pos + 512]
        if header == bytes(512):  # the end-of-archive blocks
            break
        name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
        try:
            size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            raise ValueError(f"no tar header at byte {start + pos}") from None
        body = pos + 512
        if body + size > end:
            raise ValueError(f"tar member {name!r} at byte {start + pos} runs past the data read")
        if header[156:157] in (b"0", b"\0"):
            out.append((f"{prefix}/{name}" if prefix else name, data[body:body + size]))
        pos = body + (size + 511) // 512 * 512
    return out
