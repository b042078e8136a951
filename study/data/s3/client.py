"""Talking to the store: clients (one per process, never inherited), listing, probing, reading.

Credentials and region come from boto3's standard chain (environment, ~/.aws, instance role).
Clients are never shared across processes: one per process, created lazily on first use and keyed by
pid (and forgotten in a forked child), so each DataLoader worker opens its own connections while
datasets hold only bucket, keys and endpoint and stay picklable. Every call has bounded
connect/read timeouts; data reads retry throttling and 5xx with backoff (botocore "adaptive" mode);
the probe that runs first retries little, so a missing bucket, a denied key or a dead endpoint
becomes a one-line ConfigError within seconds instead of a hang.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import boto3  # at import: without it the package fails to import, which study.data reports as such
from botocore.config import Config

from study.data.s3.errors import S3ReadError, describe, is_s3_error, retry, s3_errors

CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30
DATA_RETRIES = {"mode": "adaptive", "total_max_attempts": 8}  # botocore: total, first try included
# The probe decides "reachable and allowed" before anything else; two attempts of at most
# connect 5 s + read 10 s each keep the answer well inside a minute.
PROBE_READ_TIMEOUT = 10
PROBE_RETRIES = {"mode": "standard", "total_max_attempts": 2}
TRANSFER_THREADS = 16


def make_client(endpoint: str, *, probe: bool = False, pool: int = TRANSFER_THREADS * 2) -> Any:
    """A fresh S3 client (its own boto3 Session: creating clients from the default session is not
    thread-safe). ``probe``: short read timeout and few retries, for deciding quickly."""
    kw: dict[str, Any] = dict(connect_timeout=CONNECT_TIMEOUT, max_pool_connections=pool,
                              read_timeout=PROBE_READ_TIMEOUT if probe else READ_TIMEOUT,
                              retries=dict(PROBE_RETRIES if probe else DATA_RETRIES))
    if endpoint:
        # S3-compatible stores (MinIO, IBM COS, ...): path-style addressing works without wildcard DNS,
        # and checksums only where the API requires them (older stores reject the newer trailers).
        kw.update(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                  response_checksum_validation="when_required")
    return boto3.session.Session().client("s3", endpoint_url=endpoint or None, config=Config(**kw))


class ClientPool:
    """This process's data clients, one per endpoint."""

    def __init__(self) -> None:
        self.clients: dict[tuple[int, str], Any] = {}
        self.lock = threading.Lock()

    def forget(self) -> None:
        # A forked DataLoader worker must not use its parent's connection pool (sockets shared by two
        # processes interleave their bytes), nor a lock some parent thread held at fork time.
        self.lock = threading.Lock()
        self.clients.clear()

    def get(self, endpoint: str) -> Any:
        key = (os.getpid(), endpoint)
        client = self.clients.get(key)
        if client is None:
            with self.lock:
                client = self.clients.get(key)
                if client is None:
                    for stale in [k for k in self.clients if k[0] != key[0]]:  # spawned/forked without the hook
                        del self.clients[stale]
                    client = self.clients[key] = make_client(endpoint)
        return client


POOL = ClientPool()
os.register_at_fork(after_in_child=POOL.forget)


def client_for(endpoint: str) -> Any:
    """This process's data client for ``endpoint``, created on first use."""
    return POOL.get(endpoint)


def client_count() -> int:
    """How many data clients this process holds (a forked child starts with none)."""
    return len(POOL.clients)


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    mtime: float
    """LastModified as a POSIX timestamp."""


def list_objects(client: Any, bucket: str, prefix: str) -> dict[str, ObjectInfo]:
    """Every object under ``prefix`` (a folder: ends with "/"), folder-marker objects left out."""
    out: dict[str, ObjectInfo] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", ()):
            if not obj["Key"].endswith("/"):
                out[obj["Key"]] = ObjectInfo(int(obj["Size"]), obj["LastModified"].timestamp())
    return out


def probe(endpoint: str, bucket: str, prefix: str, what: str) -> bool:
    """Whether anything lies under ``prefix``, asked with a quick-to-give-up client; a missing bucket,
    denied access or dead endpoint is a one-line ConfigError about ``what``."""
    client = make_client(endpoint, probe=True, pool=1)
    with s3_errors(what, endpoint, bucket):
        page = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    return bool(page.get("KeyCount") or page.get("Contents"))


def read_object(endpoint: str, bucket: str, key: str, first: int = 0, end: int = 0) -> bytes:
    """The whole object, or with ``end`` its bytes ``first`` to ``end - 1`` (one ranged GET), through
    this process's client; S3ReadError (one line) when it cannot be had."""
    client = client_for(endpoint)
    ranged = {"Range": f"bytes={first}-{end - 1}"} if end else {}

    def get() -> bytes:
        body = client.get_object(Bucket=bucket, Key=key, **ranged)["Body"].read()
        if end and len(body) != end - first:  # a body cut short: transient, so the retry helper tries again
            raise OSError(f"{len(body)} of {end - first} bytes")
        return body

    try:
        return retry(get)
    except Exception as e:  # noqa: BLE001 — filtered below
        if not (is_s3_error(e) or isinstance(e, OSError)):
            raise
        raise S3ReadError(describe(e, f"reading s3://{bucket}/{key}", endpoint)) from None
