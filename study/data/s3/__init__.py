"""Datasets stored as objects under an ``s3://bucket/prefix``, read with boto3.

The objects are the same files as on disk, in the native layout (``prepare.sh --upload`` writes
them, see ``upload``), or WebDataset tar shards with an index (``--upload --shards``, see
``shard_write``; read in order by ``shards``, preferred where both are there and no ``--s3-cache``
is given). Two ways to read the per-sample objects, chosen by ``--s3-cache``:

* streaming (no ``--s3-cache``): nothing touches the local disk (``datasets``);
* cached (``--s3-cache DIR``): the objects a split needs are synced into ``DIR/<bucket>/<key>``,
  then the local readers read the copy (``cache``).

Either way the time to open a split (listing, GETs of whole files, cache sync) is the LoadRecord of
that split: seed record types 10 (train) and 11 (validation). The endpoint comes from
``--s3-endpoint``, else ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, else AWS (``urls``); clients,
timeouts and retries are ``client``'s; failures become one line without secrets (``errors``).

Importing this package needs boto3; ``study.data.s3_package`` turns its absence into a ConfigError.
"""
from __future__ import annotations

from typing import Any

from study.core.config import ConfigError, RunConfig
from study.core import catalog
from study.data.bundle import DataBundle, open_bundle, reader
from study.data.s3.cache import cache_path, open_cached, sync_to_cache
from study.data.s3.client import ObjectInfo, client_count, client_for, list_objects, make_client, probe, read_object
from study.data.s3.datasets import STREAM_OPENERS
from study.data.s3.errors import S3ReadError, describe, s3_errors
from study.data.s3.upload import upload
from study.data.s3.urls import Location, parse_url, resolve_endpoint, shown_endpoint

__all__ = ["Location", "ObjectInfo", "S3ReadError", "cache_path", "client_count", "client_for", "describe",
           "list_objects", "make_client", "open_datasets", "parse_url", "read_object", "shown_endpoint",
           "sync_to_cache", "upload"]


def open_datasets(cfg: RunConfig) -> DataBundle:
    """Train and validation datasets under ``cfg.data_root`` (s3://), streamed or through the cache.

    Raises ConfigError (one line) for a bad URL or endpoint, a missing bucket or dataset prefix,
    denied access or an unreachable endpoint; the probe that decides those is bounded (seconds)."""
    loc = parse_url(cfg.data_root)
    endpoint = resolve_endpoint(cfg.s3_endpoint)
    entry = catalog.get(cfg.dataset)
    # Import the reader (torch, torchvision) before the clock starts, as the local path does.
    reader(cfg.dataset)
    import torchvision.datasets.folder  # noqa: F401
    from study.data.s3.shards import has_shards, shard_loader  # torch's IterableDataset: imported on use

    if not cfg.s3_cache and has_shards(loc, endpoint, cfg.dataset):  # shards, where written, over per-sample objects
        if cfg.coarse_labels or cfg.crop_to_box:
            flag = "--coarse-labels" if cfg.coarse_labels else "--crop-to-box"
            raise ConfigError(f"{flag} is read by the local reader, which shards skip: add --s3-cache DIR to read "
                              f"the per-sample objects through the cache")
        return open_bundle(cfg, shard_loader(cfg, loc, endpoint))
    where = loc.url(entry.folder) + "/"
    if not probe(endpoint, loc.bucket, loc.key(entry.folder) + "/", f"listing {where}"):
        raise ConfigError(f"no {entry.title} under {where} at {shown_endpoint(endpoint)}; upload it with "
                          f"./prepare.sh --root DATA_ROOT --upload {loc.url()}")

    if cfg.s3_cache:
        listing: dict[str, ObjectInfo] = {}

        def load(train: bool) -> Any:
            if not listing:  # inside the train load's timing: listing is part of fetching
                with s3_errors(f"listing {where}", endpoint, loc.bucket):
                    listing.update(list_objects(client_for(endpoint), loc.bucket, loc.key(entry.folder) + "/"))
            return open_cached(cfg, loc, endpoint, train, listing)
    else:
        if cfg.coarse_labels or cfg.crop_to_box:
            flag = "--coarse-labels" if cfg.coarse_labels else "--crop-to-box"
            raise ConfigError(f"{flag} is read by the local reader, which streaming skips: add --s3-cache DIR")
        opener = STREAM_OPENERS[cfg.dataset]
        size = cfg.image_size or entry.default_size

        def load(train: bool) -> Any:
            return opener(loc, endpoint, train, size)

    return open_bundle(cfg, load)
