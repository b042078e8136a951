"""Sharded datasets: WebDataset tar shards read in order, a ranged GET per run of samples.

A ``ShardStream`` is an IterableDataset with a length. Iterated (the training and validation
loaders), each reader, that is each DataLoader worker of each DDP rank, takes its own contiguous
span of the epoch's sample sequence (the shards in an order drawn per epoch for training, in index
order for validation), reads it shard by shard with one ranged GET per piece of at most
``PIECE_BYTES`` while the next ``PREFETCH`` pieces download on threads, and decodes the samples;
training passes them through a shuffle buffer. Spans are cut so that every rank gets the same
number of full batches (a rank with fewer would leave the others waiting in an all-reduce) and the
workers of a rank whole batches each; where there are fewer shards than readers, readers share a
shard by byte range rather than idling.

It keeps the map-style interface the rest of the tool relies on: ``len``, ``ds[i]`` (one ranged GET
of that sample: what the preflight's sample checks, the example inputs and the pictures pass read)
and ``select(indices)`` (``--subset``: the same samples as the local reader's seeded subset, the
others skipped without decoding). Item ``i`` equals item ``i`` of the local reader.
"""
from __future__ import annotations

import importlib
import io
import itertools
import random
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

from torch.utils.data import IterableDataset, get_worker_info

from study.core.config import ConfigError
from study.core import catalog
from study.data.s3.client import client_for, probe, read_object
from study.data.s3.errors import S3ReadError, s3_errors
from study.data.s3.shard_index import (INDEX, Shard, check_against_listing, members, parse_index, sample_key,
                                       shards_key, shards_url, split_shards)
from study.data.s3.urls import Location
from study.data.samples import SampleError

# One ranged GET at most: bounds a reader's memory to PREFETCH + 1 pieces, and its wait for the first one.
PIECE_BYTES = 8 * 2**20
FIRST_PIECE_BYTES = 2**20  # a span's first piece (each next one twice as large): decoding starts after 1 MiB
PREFETCH = 2  # pieces downloading while one decodes
SHUFFLE_BUFFER = 512  # training samples (encoded bytes) each reader mixes
SHUFFLE_START = 16  # samples the buffer holds before it yields its first; it grows to SHUFFLE_BUFFER meanwhile


def build_transform(dataset: str, train: bool, size: int) -> Any:
    """The transform the local reader of ``dataset`` applies (joint image/trimap one for Pets)."""
    entry = catalog.get(dataset)
    if entry.task == "segment":
        from study.data.pets import JointTransform

        return JointTransform(size, train)
    if dataset in (catalog.CIFAR10.name, catalog.CIFAR100.name):
        from study.data.cifar import build_transform as cifar_transform

        mod = importlib.import_module(entry.reader)
        return cifar_transform(size, train, mod.MEAN, mod.STD)
    from study.data.imagefolder import build_transform as folder_transform

    return folder_transform(size, train)


class Decoder:
    """A sample's members (extension -> bytes) -> the item the local reader returns. Picklable."""

    def __init__(self, task: str, transform: Any) -> None:
        self.task, self.transform = task, transform

    def __call__(self, parts: dict[str, bytes]) -> tuple[Any, Any]:
        from PIL import Image

        if self.task == "segment":
            image = Image.open(io.BytesIO(parts["jpg"])).convert("RGB")
            return self.transform(image, Image.open(io.BytesIO(parts["png"])))
        ext = next(e for e in parts if e != "cls")
        img = Image.open(io.BytesIO(parts[ext])).convert("RGB")
        return self.transform(img), int(parts["cls"])


class ShardStream(IterableDataset):
    """One split held as shards (see the module docstring). Holds endpoint, bucket and keys only."""

    def __init__(self, endpoint: str, bucket: str, base_key: str, base_url: str, shards: list[Shard],
                 decode: Callable[[dict[str, bytes]], Any], classes: list[str], train: bool, seed: int) -> None:
        self.endpoint, self.bucket, self.base_key, self.base_url = endpoint, bucket, base_key, base_url
        self.shards, self.decode, self.classes, self.train, self.seed = shards, decode, classes, train, seed
        self.class_to_idx = {c: i for i, c in enumerate(classes)}
        self.keep: list[int] | None = None
        """Local indices kept by select() (sorted), None: all."""
        self.rank, self.world, self.batch, self.drop_last = 0, 1, 1, False
        self.buffer = SHUFFLE_BUFFER if train else 0
        self.epochs = 0
        self._index()

    def _index(self) -> None:
        keep = None if self.keep is None else set(self.keep)
        self.kept = [[j for j, i in enumerate(s.samples) if keep is None or i in keep] for s in self.shards]
        self.total = sum(map(len, self.kept))
        self.where: dict[int, tuple[int, int]] = {}  # local index -> (shard, position), built on first use

    # --- the map-style side -----------------------------------------------------------------------
    def __len__(self) -> int:
        first, end = self._rank_span()
        return end - first

    def local_index(self, i: int) -> int:
        if not 0 <= i < self.total:
            raise IndexError(i)
        return self.keep[i] if self.keep is not None else i

    def __getitem__(self, i: int) -> Any:
        local = self.local_index(i)
        if not self.where:
            self.where = {idx: (s, j) for s, shard in enumerate(self.shards) for j, idx in enumerate(shard.samples)}
        s, j = self.where[local]
        shard = self.shards[s]
        data = self._get(shard, shard.offsets[j], shard.offsets[j + 1])
        return next(self._decoded(shard, [j], shard.offsets[j], data))

    def select(self, indices: list[int]) -> "ShardStream":
        """The samples at ``indices`` (positions in this dataset), in local index order."""
        out = self._copy()
        out.keep = sorted(self.local_index(i) for i in indices)
        out._index()
        return out

    def for_loader(self, rank: int, world: int, batch: int, drop_last: bool) -> "ShardStream":
        """This rank's view for a DataLoader of ``batch``: its length is what the rank yields. The loader
        needs a generator seeded alike on every rank: its workers draw each epoch's shard order from it."""
        out = self._copy()
        out.rank, out.world, out.batch, out.drop_last = rank, world, max(1, batch), drop_last
        return out

    def _copy(self) -> "ShardStream":
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        return out

    # --- the stream -------------------------------------------------------------------------------
    def _rank_span(self) -> tuple[int, int]:
        n, r, w = self.total, self.rank, self.world
        if self.drop_last:
            q = n // w
            return r * q, r * q + q // self.batch * self.batch
        return r * n // w, (r + 1) * n // w

    def reader_span(self, worker: int, workers: int) -> tuple[int, int]:
        """[first, end) of the epoch's sequence that one DataLoader worker of this rank reads."""
        lo, hi = self._rank_span()
        batches = -(-(hi - lo) // self.batch)
        b0, b1 = worker * batches // workers, (worker + 1) * batches // workers
        return lo + b0 * self.batch, min(lo + b1 * self.batch, hi)

    def shard_order(self, epoch_seed: int) -> list[int]:
        order = list(range(len(self.shards)))
        if self.train:
            random.Random(epoch_seed).shuffle(order)
        return order

    def pieces(self, epoch_seed: int, first: int, end: int) -> list[tuple[int, list[int]]]:
        """(shard, sample positions) runs covering [first, end) of the epoch's sequence, each at most
        PIECE_BYTES (the first FIRST_PIECE_BYTES, doubling from there) between its first sample's start and its last one's end."""
        out: list[tuple[int, list[int]]] = []
        at, cap = 0, FIRST_PIECE_BYTES
        for s in self.shard_order(epoch_seed):
            kept = self.kept[s]
            lo, hi = max(first - at, 0), min(end - at, len(kept))
            at += len(kept)
            if lo >= hi:
                continue
            offsets, run = self.shards[s].offsets, []
            for j in kept[lo:hi]:
                if run and offsets[j + 1] - offsets[run[0]] > cap:
                    out.append((s, run))
                    run, cap = [], min(2 * cap, PIECE_BYTES)
                run.append(j)
            out.append((s, run))
            cap = min(2 * cap, PIECE_BYTES)
            if at >= end:
                break
        return out

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        # One seed for every reader of an epoch: a worker's is the loader's base seed (drawn per epoch
        # from its generator, the same on every rank), counted on where persistent workers reuse it.
        base = (info.seed - info.id) if info else self.seed
        epoch_seed = (base + self.epochs) % 2**62
        self.epochs += 1
        first, end = self.reader_span(worker, workers)
        samples = self._stream(self.pieces(epoch_seed, first, end))
        if not self.buffer:
            yield from samples
            return
        rng, buffer = random.Random(epoch_seed * 1009 + worker), []
        for sample in samples:
            buffer.append(sample)
            if len(buffer) < self.buffer:  # growing: two in for every one out, until full
                buffer.extend(itertools.islice(samples, 1))
            if len(buffer) >= min(SHUFFLE_START, self.buffer):
                k = rng.randrange(len(buffer))
                buffer[k], buffer[-1] = buffer[-1], buffer[k]
                yield self._decode(*buffer.pop())
        rng.shuffle(buffer)
        for sample in buffer:
            yield self._decode(*sample)

    def _stream(self, pieces: list[tuple[int, list[int]]]) -> Iterator[Any]:
        """Samples of ``pieces`` in order (decoded, or encoded for the shuffle buffer), the next pieces
        downloading meanwhile."""
        def fetch(piece: tuple[int, list[int]]) -> bytes:
            shard = self.shards[piece[0]]
            return self._get(shard, shard.offsets[piece[1][0]], shard.offsets[piece[1][-1] + 1])

        with ThreadPoolExecutor(PREFETCH, thread_name_prefix="shard-prefetch") as pool:
            todo = iter(pieces)
            # range first: zip stops on it without having drawn a piece it would drop
            pending = deque((p, pool.submit(fetch, p)) for _, p in zip(range(PREFETCH), todo))
            while pending:
                (s, run), future = pending.popleft()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(fetch, nxt)))
                shard = self.shards[s]
                data = future.result()
                if self.buffer:
                    yield from self._split(shard, run, shard.offsets[run[0]], data)
                else:
                    yield from self._decoded(shard, run, shard.offsets[run[0]], data)

    def _get(self, shard: Shard, first: int, end: int) -> bytes:
        return read_object(self.endpoint, self.bucket, f"{self.base_key}/{shard.name}", first, end)

    def _split(self, shard: Shard, run: list[int], start: int, data: bytes) -> Iterator[tuple[Shard, int, dict]]:
        """(shard, local index, members) of each sample of ``run``: what the index says lies there."""
        found: dict[str, dict[str, bytes]] = {}
        try:
            for name, body in members(data, start):
                key, _, ext = name.rpartition("/")[2].partition(".")
                found.setdefault(key, {})[ext] = body
        except ValueError as e:
            raise SampleError(f"shard {self.base_url}/{shard.name} is damaged near sample "
                              f"{sample_key(shard.samples[run[0]])}: {e}; write the shards again") from None
        for j in run:
            local = shard.samples[j]
            parts = found.get(sample_key(local))
            if not parts:
                raise SampleError(f"sample {sample_key(local)} is not in shard {self.base_url}/{shard.name} where its "
                                  f"index puts it: index and shards were written apart; write the shards again")
            yield shard, local, parts

    def _decoded(self, shard: Shard, run: list[int], start: int, data: bytes) -> Iterator[Any]:
        for sample in self._split(shard, run, start, data):
            yield self._decode(*sample)

    def _decode(self, shard: Shard, local: int, parts: dict[str, bytes]) -> Any:
        try:
            return self.decode(parts)
        except Exception as e:  # noqa: BLE001 — any decoder error, with its sample and shard
            first = " ".join(str(e).split()) or "no message"
            raise SampleError(f"sample {sample_key(local)} of shard {self.base_url}/{shard.name} cannot be read: "
                              f"{type(e).__name__}: {first}") from None


def shard_loader(cfg: Any, loc: Location, endpoint: str) -> Callable[[bool], ShardStream]:
    """``load(train)`` for open_bundle: the index read once (inside the train split's LoadRecord), each
    split checked against a listing of its shards; ConfigError for any mismatch."""
    entry = catalog.get(cfg.dataset)
    base_key, base_url = shards_key(loc, cfg.dataset), shards_url(loc, cfg.dataset)
    held: dict[str, Any] = {}

    def load(train: bool) -> ShardStream:
        if not held:
            try:
                text = read_object(endpoint, loc.bucket, f"{base_key}/{INDEX}").decode("utf-8", "replace")
            except S3ReadError as e:
                raise ConfigError(str(e)) from None
            held["doc"] = parse_index(text, f"{base_url}/{INDEX}", cfg.dataset)
            listing: dict[str, tuple[int, str]] = {}
            client = client_for(endpoint)
            with s3_errors(f"listing {base_url}/", endpoint, loc.bucket):
                for page in client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=base_key + "/"):
                    for obj in page.get("Contents", ()):
                        listing[obj["Key"]] = (int(obj["Size"]), str(obj.get("ETag", "")).strip('"'))
            held["listing"] = listing
        doc = held["doc"]
        _, shards = split_shards(doc, train, f"{base_url}/{INDEX}")
        check_against_listing(shards, held["listing"], base_key, base_url)
        classes = list(entry.classes) or [str(c) for c in doc.get("classes", [])]
        decode = Decoder(entry.task, build_transform(cfg.dataset, train, cfg.image_size or entry.default_size))
        return ShardStream(endpoint, loc.bucket, base_key, base_url, shards, decode, classes, train, cfg.seed)

    return load


def has_shards(loc: Location, endpoint: str, dataset: str) -> bool:
    """Whether ``dataset``'s shard index lies under the prefix (asked with the quick probe)."""
    key = f"{shards_key(loc, dataset)}/{INDEX}"
    return probe(endpoint, loc.bucket, key, f"listing {shards_url(loc, dataset)}/")
