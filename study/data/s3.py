"""Datasets stored as objects under an ``s3://bucket/prefix``, read with boto3.

The objects are the same files as on disk, in the native layout (``prepare.sh --upload`` writes
them): ``<prefix>/cifar-10-batches-py/data_batch_1``, ``<prefix>/oxford-iiit-pet/images/*.jpg``,
``<prefix>/imagenet/train/<class>/*.JPEG`` ... Two ways to read them, chosen by ``--s3-cache``:

* streaming (no ``--s3-cache``): nothing touches the local disk. Pets and ImageFolder list the
  prefix when the split is opened and GET the image (and trimap) of every item in ``__getitem__``,
  so the per-object cost lands in the data-wait phase of every step. CIFAR batches are whole
  pickled files that must be unpickled to know the split's size, so opening a split GETs its
  batches into memory (DataLoader workers inherit the arrays, as with local CIFAR).
* cached (``--s3-cache DIR``): opening a split downloads the objects it needs into
  ``DIR/<bucket>/<key>`` (only those missing or changed: size and LastModified, as ``aws s3 sync``
  compares), then the local readers of ``cifar``/``pets``/``imagefolder`` read the copy.

Either way the time to open a split (listing, GETs of whole files, cache sync) is the LoadRecord of
that split: seed record types 10 (train) and 11 (validation).

Connections. Credentials and region come from boto3's standard chain (environment, ~/.aws, instance
role); the endpoint from ``--s3-endpoint``, else ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, else AWS.
Clients are never shared across processes: one per process, created lazily on first use and keyed
by pid (and forgotten in a forked child), so each DataLoader worker opens its own connections while
datasets hold only bucket, keys and endpoint and stay picklable. Every call has bounded connect/read
timeouts; data reads retry throttling and 5xx with backoff (botocore "adaptive" mode); the probe
that runs first when a split is opened retries little, so a missing bucket, a denied key or a dead
endpoint becomes a one-line ConfigError within seconds instead of a hang.

Secrets. Error messages are built here from the error code and the bucket/endpoint, never from a
botocore message or request; endpoints carrying ``user:password@`` are refused (RunConfig stores
the endpoint, and it lands in config.json).
"""
from __future__ import annotations

import hashlib
import importlib
import io
import os
import pickle
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from study.config import ConfigError, RunConfig
from study.data import DataBundle, take_subset, timed_load
from study.data.synthetic import CIFAR_FOLDER, IMAGEFOLDER_FOLDER, MARKER, PETS_FOLDER

SCHEME = "s3://"
FOLDERS = {"cifar10": CIFAR_FOLDER, "oxford-pets": PETS_FOLDER, "imagefolder": IMAGEFOLDER_FOLDER}
READERS = {"cifar10": "study.data.cifar", "oxford-pets": "study.data.pets", "imagefolder": "study.data.imagefolder"}
TITLES = {CIFAR_FOLDER: "CIFAR-10", PETS_FOLDER: "Oxford-IIIT Pet", IMAGEFOLDER_FOLDER: "ImageFolder"}
# Written by prepare.sh --imagenet next to its links; a local path, meaningless in a bucket.
UPLOAD_SKIP = {f"{IMAGEFOLDER_FOLDER}/SOURCE"}

CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30
DATA_RETRIES = {"mode": "adaptive", "total_max_attempts": 8}  # botocore: total, first try included
# The probe decides "reachable and allowed" before anything else; two attempts of at most
# connect 5 s + read 10 s each keep the answer well inside a minute.
PROBE_READ_TIMEOUT = 10
PROBE_RETRIES = {"mode": "standard", "total_max_attempts": 2}
TRANSFER_THREADS = 16
BODY_READ_ATTEMPTS = 3  # botocore retries a request until its headers arrive; a body cut short is ours
MULTIPART_THRESHOLD = 64 * 2**20

# Today's rule is 3-63 of [a-z0-9.-]; older us-east-1 buckets may also hold capitals and underscores.
# Never a slash, so a bucket name is one path component in the cache.
_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{1,253}[A-Za-z0-9]$")


class S3ReadError(RuntimeError):
    """An object could not be read while training (after retries). One line, no secrets."""


# --------------------------------------------------------------------------------------------------
# locations and endpoints
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Location:
    bucket: str
    prefix: str
    """Key prefix without leading or trailing slash; "" for the bucket's root."""

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def url(self, *parts: str) -> str:
        return f"{SCHEME}{self.bucket}/{self.key(*parts)}"


def parse_url(url: str) -> Location:
    """``s3://bucket/prefix`` -> Location; ConfigError for anything else."""
    if not url.startswith(SCHEME):
        raise ConfigError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len(SCHEME):].partition("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise ConfigError(f"bad bucket name {bucket!r} in {url!r}: use s3://bucket/prefix with a bucket name of "
                          f"3-63 letters, digits, dots and hyphens")
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ConfigError(f"the prefix of {url!r} must not contain '.' or '..' parts")
    return Location(bucket, "/".join(parts))


def resolve_endpoint(endpoint: str = "") -> str:
    """The endpoint URL to use: the given one, else the environment's, else "" (AWS itself)."""
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3", "") or os.environ.get("AWS_ENDPOINT_URL", "")
    check_endpoint(endpoint)
    return endpoint.rstrip("/")


def check_endpoint(endpoint: str) -> None:
    if not endpoint:
        return
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"S3 endpoint must be an http(s)://host[:port] URL, got {shown_endpoint(endpoint)!r}")
    if parts.username or parts.password:
        raise ConfigError("S3 endpoint must not carry credentials (user:password@); give them through the "
                          "standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws)")


def shown_endpoint(endpoint: str) -> str:
    """The endpoint as printed in messages: scheme://host[:port] (no credentials, path or query)."""
    if not endpoint:
        return "AWS S3"
    parts = urlsplit(endpoint)
    host = parts.hostname or "?"
    port = f":{parts.port}" if _safe_port(parts) else ""
    return f"{parts.scheme}://{host}{port}" if parts.scheme else host


def _safe_port(parts: Any) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------------
# clients: one per process, never inherited
# --------------------------------------------------------------------------------------------------
def make_client(endpoint: str, *, probe: bool = False, pool: int = TRANSFER_THREADS * 2) -> Any:
    """A fresh S3 client (its own boto3 Session: creating clients from the default session is not
    thread-safe). ``probe``: short read timeout and few retries, for deciding quickly."""
    import boto3
    from botocore.config import Config

    kw: dict[str, Any] = dict(connect_timeout=CONNECT_TIMEOUT, max_pool_connections=pool,
                              read_timeout=PROBE_READ_TIMEOUT if probe else READ_TIMEOUT,
                              retries=dict(PROBE_RETRIES if probe else DATA_RETRIES))
    if endpoint:
        # S3-compatible stores (MinIO, IBM COS, ...): path-style addressing works without wildcard DNS,
        # and checksums only where the API requires them (older stores reject the newer trailers).
        kw.update(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                  response_checksum_validation="when_required")
    return boto3.session.Session().client("s3", endpoint_url=endpoint or None, config=Config(**kw))


_clients: dict[tuple[int, str], Any] = {}
_clients_lock = threading.Lock()


def _forget_clients_after_fork() -> None:
    # A forked DataLoader worker must not use its parent's connection pool (sockets shared by two
    # processes interleave their bytes), nor a lock some parent thread held at fork time.
    global _clients_lock
    _clients_lock = threading.Lock()
    _clients.clear()


os.register_at_fork(after_in_child=_forget_clients_after_fork)


def client_for(endpoint: str) -> Any:
    """This process's data client for ``endpoint``, created on first use."""
    key = (os.getpid(), endpoint)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                for stale in [k for k in _clients if k[0] != key[0]]:  # spawned/forked without the hook
                    del _clients[stale]
                client = _clients[key] = make_client(endpoint)
    return client


# --------------------------------------------------------------------------------------------------
# errors: one line, built from codes, never from botocore's text
# --------------------------------------------------------------------------------------------------
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
           "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "InvalidSecurity", "403", "Forbidden"}
_NO_BUCKET = {"NoSuchBucket"}


def describe(e: BaseException, what: str, endpoint: str, bucket: str = "") -> str:
    """One line for an S3 failure while doing ``what`` (e.g. "listing s3://b/p/cifar-10-batches-py/").
    ``bucket`` is given for bucket-level calls (list, head), where a bare 404 means no such bucket."""
    from botocore import exceptions as bx

    at = shown_endpoint(endpoint)
    if isinstance(e, bx.ClientError):
        response = e.response if isinstance(e.response, dict) else {}
        code = str((response.get("Error") or {}).get("Code", "") or "")
        status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode", 0) or 0)
        if code in _NO_BUCKET or (bucket and code in ("404", "NotFound")):
            return f"bucket {bucket or '?'!r} does not exist at {at} ({what})"
        if code in _DENIED or status == 403:
            return (f"access denied {what} at {at} ({code or status}); check the credentials the standard AWS "
                    f"chain finds (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws, instance role)")
        if code in ("NoSuchKey", "404", "NotFound"):
            return f"object not found {what} at {at}"
        if status >= 500 or code in ("SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded"):
            return f"S3 at {at} kept failing {what} after retries ({code or status})"
        return f"S3 at {at} refused {what} ({code or status or type(e).__name__})"
    if isinstance(e, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError)):
        return (f"no usable AWS credentials {what}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                f"AWS_PROFILE, or run where an instance role applies")
    if isinstance(e, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ProxyConnectionError)):
        return (f"cannot reach the S3 endpoint {at} {what} ({type(e).__name__}); check --s3-endpoint / "
                f"AWS_ENDPOINT_URL and the network")
    if isinstance(e, (bx.ReadTimeoutError, bx.ConnectionClosedError, bx.ResponseStreamingError,
                      bx.IncompleteReadError)):
        return f"the S3 endpoint {at} stopped answering {what} ({type(e).__name__})"
    if isinstance(e, bx.NoRegionError):
        return f"no AWS region configured {what}: set AWS_DEFAULT_REGION or a region in ~/.aws/config"
    return f"S3 request failed {what} at {at} ({type(e).__name__})"


def _is_s3_error(e: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(e, (BotoCoreError, ClientError))


@contextmanager
def s3_errors(what: str, endpoint: str, bucket: str = "") -> Iterator[None]:
    """Turn botocore's exceptions into a one-line ConfigError. ``from None``: no chained exception,
    whose text could carry request details, travels with it."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 — only botocore's are translated
        if not _is_s3_error(e):
            raise
        raise ConfigError(describe(e, what, endpoint, bucket)) from None


# --------------------------------------------------------------------------------------------------
# listing, probing, reading
# --------------------------------------------------------------------------------------------------
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


def probe(loc: Location, endpoint: str, folder: str) -> None:
    """Fail fast, with one line, unless ``folder`` exists under the prefix and can be listed."""
    where = loc.url(folder) + "/"
    client = make_client(endpoint, probe=True, pool=1)
    with s3_errors(f"listing {where}", endpoint, loc.bucket):
        page = client.list_objects_v2(Bucket=loc.bucket, Prefix=loc.key(folder) + "/", MaxKeys=1)
    if not page.get("KeyCount") and not page.get("Contents"):
        raise ConfigError(f"no {TITLES.get(folder, folder)} under {where} at {shown_endpoint(endpoint)}; upload it "
                          f"with ./prepare.sh --root DATA_ROOT --upload {loc.url()}")


def _transient(e: BaseException) -> bool:
    """A failure worth another try at our level: the connection or the body broke. (Throttling and
    5xx answers are botocore's to retry; another ClientError will not go away.)"""
    from botocore.exceptions import ClientError

    return not isinstance(e, ClientError) and (_is_s3_error(e) or isinstance(e, OSError))


def read_object(endpoint: str, bucket: str, key: str) -> bytes:
    """The whole object, through this process's client; S3ReadError (one line) when it cannot be had."""
    client = client_for(endpoint)
    for attempt in range(BODY_READ_ATTEMPTS):
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as e:  # noqa: BLE001 — filtered below
            if not (_is_s3_error(e) or isinstance(e, OSError)):
                raise
            if _transient(e) and attempt + 1 < BODY_READ_ATTEMPTS:
                time.sleep(0.2 * 2**attempt)
                continue
            raise S3ReadError(describe(e, f"reading s3://{bucket}/{key}", endpoint)) from None
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------------
# streaming datasets: picklable (bucket, keys, endpoint, transform), objects fetched where used
# --------------------------------------------------------------------------------------------------
class _RestrictedUnpickler(pickle.Unpickler):
    """CIFAR batches hold dicts, lists, bytes and numpy arrays; a bucket is a wider trust boundary than
    a local folder, so nothing else may be constructed while unpickling one."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def _unpickle_batch(data: bytes, url: str) -> dict:
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # noqa: BLE001 — any decoding failure is a bad file
        raise ConfigError(f"{url} is not a CIFAR-10 python batch ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{url} is not a CIFAR-10 python batch (no dict inside)")
    return obj


class S3CIFAR10:
    """CIFAR-10 split held in memory after one GET per batch object; items as torchvision's CIFAR10
    returns them (PIL image through ``transform``, int target)."""

    def __init__(self, data: Any, targets: list[int], classes: list[str], transform: Callable | None) -> None:
        self.data, self.targets, self.classes, self.transform = data, targets, classes, transform
        self.class_to_idx = {c: i for i, c in enumerate(classes)}

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        img = Image.fromarray(self.data[index])
        return (self.transform(img) if self.transform else img), self.targets[index]


def open_cifar(loc: Location, endpoint: str, train: bool, size: int) -> S3CIFAR10:
    import numpy as np

    from study.data.cifar import NATIVE_SIZE, build_transform, release_files
    from torchvision.datasets import CIFAR10

    client = client_for(endpoint)  # created here, before the fetching threads share it
    folder = loc.key(CIFAR_FOLDER) + "/"
    with s3_errors(f"listing {loc.url(CIFAR_FOLDER)}/", endpoint, loc.bucket):
        listing = list_objects(client, loc.bucket, folder)
    missing = [n for n, _ in release_files() if folder + n not in listing]
    if missing:
        raise ConfigError(f"incomplete CIFAR-10 at {loc.url(CIFAR_FOLDER)}/ (missing {', '.join(missing)}); "
                          f"upload a complete one with ./prepare.sh --upload {loc.url()}")
    synthetic = folder + MARKER in listing
    md5s = dict(release_files())
    names = [n for n, _ in (CIFAR10.train_list if train else CIFAR10.test_list)] + [CIFAR10.meta["filename"]]

    def fetch(name: str) -> bytes:
        try:
            body = read_object(endpoint, loc.bucket, folder + name)
        except S3ReadError as e:
            raise ConfigError(str(e)) from None
        if not synthetic and hashlib.md5(body).hexdigest() != md5s[name]:
            raise ConfigError(f"corrupt CIFAR-10 object {loc.url(CIFAR_FOLDER, name)} (MD5 differs from the "
                              f"official release); upload it again")
        return body

    with ThreadPoolExecutor(len(names)) as pool:
        bodies = dict(zip(names, pool.map(fetch, names)))
    meta = _unpickle_batch(bodies.pop(CIFAR10.meta["filename"]), loc.url(CIFAR_FOLDER, "batches.meta"))
    arrays, targets = [], []
    for name in names[:-1]:
        entry = _unpickle_batch(bodies[name], loc.url(CIFAR_FOLDER, name))
        arrays.append(entry["data"])
        targets.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
    data = np.vstack(arrays).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))  # HWC, as torchvision keeps it
    classes = list(meta[CIFAR10.meta["key"]])
    return S3CIFAR10(data, [int(t) for t in targets], classes, build_transform(size or NATIVE_SIZE, train))


class S3OxfordPets:
    """Oxford-IIIT Pet segmentation split: image and trimap GET per item (2 objects per sample)."""

    def __init__(self, endpoint: str, bucket: str, folder_key: str, ids: list[str], transforms: Callable) -> None:
        self.endpoint, self.bucket, self.folder_key, self.ids, self.transforms = endpoint, bucket, folder_key, ids, transforms

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        from PIL import Image

        name = self.ids[index]
        image = Image.open(io.BytesIO(read_object(self.endpoint, self.bucket, f"{self.folder_key}/images/{name}.jpg")))
        trimap = Image.open(io.BytesIO(read_object(self.endpoint, self.bucket,
                                                   f"{self.folder_key}/annotations/trimaps/{name}.png")))
        return self.transforms(image.convert("RGB"), trimap)


def _pets_split_ids(text: str, url: str) -> list[str]:
    ids = []
    for n, line in enumerate(text.splitlines(), 1):  # torchvision's own rule: 4 fields per line
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 4:
            raise ConfigError(f"cannot read the Oxford-IIIT Pet split file {url}: line {n} has {len(fields)} "
                              f"fields, not 4")
        ids.append(fields[0])
    return ids


def open_pets(loc: Location, endpoint: str, train: bool, size: int) -> S3OxfordPets:
    from study.data.pets import DEFAULT_SIZE, JointTransform

    client = client_for(endpoint)
    folder = loc.key(PETS_FOLDER)
    split = "trainval" if train else "test"
    split_url = loc.url(PETS_FOLDER, "annotations", f"{split}.txt")
    with s3_errors(f"listing {loc.url(PETS_FOLDER)}/", endpoint, loc.bucket):
        images = list_objects(client, loc.bucket, f"{folder}/images/")
        trimaps = list_objects(client, loc.bucket, f"{folder}/annotations/trimaps/")
    try:
        text = read_object(endpoint, loc.bucket, f"{folder}/annotations/{split}.txt").decode("utf-8", "replace")
    except S3ReadError as e:
        raise ConfigError(f"incomplete Oxford-IIIT Pet at {loc.url(PETS_FOLDER)}/: {e}") from None
    ids = _pets_split_ids(text, split_url)
    lost = [i for i in ids if f"{folder}/images/{i}.jpg" not in images or f"{folder}/annotations/trimaps/{i}.png"
            not in trimaps]
    if lost:
        raise ConfigError(f"{len(lost)} samples listed in {split_url} have no image or trimap object under "
                          f"{loc.url(PETS_FOLDER)}/ (first: {lost[0]}); upload the dataset again")
    return S3OxfordPets(endpoint, loc.bucket, folder, ids, JointTransform(size or DEFAULT_SIZE, train))


class S3ImageFolder:
    """ImageFolder split: classes from the key "folders" under the split, one GET per item."""

    def __init__(self, endpoint: str, bucket: str, samples: list[tuple[str, int]], classes: list[str],
                 transform: Callable | None) -> None:
        self.endpoint, self.bucket, self.samples, self.classes, self.transform = endpoint, bucket, samples, classes, transform
        self.class_to_idx = {c: i for i, c in enumerate(classes)}
        self.targets = [t for _, t in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        key, target = self.samples[index]
        img = Image.open(io.BytesIO(read_object(self.endpoint, self.bucket, key))).convert("RGB")
        return (self.transform(img) if self.transform else img), target


def open_imagefolder(loc: Location, endpoint: str, train: bool, size: int) -> S3ImageFolder:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from study.data.imagefolder import DEFAULT_SIZE, build_transform

    split = "train" if train else "val"
    base = loc.key(IMAGEFOLDER_FOLDER, split) + "/"
    with s3_errors(f"listing {loc.url(IMAGEFOLDER_FOLDER, split)}/", endpoint, loc.bucket):
        listing = list_objects(client_for(endpoint), loc.bucket, base)
    by_class: dict[str, list[str]] = {}
    for key in listing:
        rel = key[len(base):]
        if "/" in rel:  # files directly under the split are not in any class, as in ImageFolder
            by_class.setdefault(rel.split("/", 1)[0], []).append(key)
    classes = sorted(by_class)
    if not classes:
        raise ConfigError(f"no ImageFolder {split} set under {loc.url(IMAGEFOLDER_FOLDER, split)}/; upload it with "
                          f"./prepare.sh --upload {loc.url()}")
    samples = []
    for idx, cls in enumerate(classes):
        keys = sorted(k for k in by_class[cls] if k.lower().endswith(IMG_EXTENSIONS))
        if not keys:
            raise ConfigError(f"unusable ImageFolder at {loc.url(IMAGEFOLDER_FOLDER, split)}/: class {cls!r} has no "
                              f"image objects")
        samples += [(k, idx) for k in keys]
    return S3ImageFolder(endpoint, loc.bucket, samples, classes, build_transform(size or DEFAULT_SIZE, train))


_STREAM_OPENERS = {"cifar10": open_cifar, "oxford-pets": open_pets, "imagefolder": open_imagefolder}


# --------------------------------------------------------------------------------------------------
# local cache
# --------------------------------------------------------------------------------------------------
def cache_path(cache_root: str | os.PathLike, bucket: str, key: str) -> Path:
    """Where object ``bucket/key`` lives in the cache; ConfigError for any key that could land outside
    it (absolute, "..", ".", empty parts, backslashes, NUL) or that resolves outside it (links)."""
    def refuse(why: str) -> ConfigError:
        return ConfigError(f"refusing S3 object key {key!r} from bucket {bucket!r}: {why}, so it could be "
                           f"written outside the cache folder {cache_root}")

    if not _BUCKET_RE.match(bucket) or ".." in bucket:
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


def _fresh(path: Path, info: ObjectInfo) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_size == info.size and abs(st.st_mtime - info.mtime) < 1.0


def _download(endpoint: str, bucket: str, key: str, dest: Path, info: ObjectInfo) -> int:
    """GET ``key`` into ``dest`` atomically (temporary name, then rename); mtime = LastModified."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.part")
    client = client_for(endpoint)
    try:
        for attempt in range(BODY_READ_ATTEMPTS):
            try:
                body = client.get_object(Bucket=bucket, Key=key)["Body"]
                with open(tmp, "wb") as fh:
                    for chunk in body.iter_chunks(1 << 20):
                        fh.write(chunk)
                break
            except Exception as e:  # noqa: BLE001 — body cut short: retry; anything else: raise
                if not _transient(e) or attempt + 1 == BODY_READ_ATTEMPTS:
                    raise
                time.sleep(0.2 * 2**attempt)
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
    todo = [k for k in listing if not _fresh(dests[k], listing[k])]
    if not todo:
        return 0, 0
    client_for(endpoint)  # create it once here, not racing in the pool's threads
    with ThreadPoolExecutor(min(threads, len(todo))) as pool:
        sizes = list(pool.map(lambda k: _download(endpoint, bucket, k, dests[k], listing[k]), todo))
    return len(todo), sum(sizes)


def _split_keys(dataset: str, bucket: str, folder_key: str, listing: dict[str, ObjectInfo], train: bool,
                read_text: Callable[[str], str]) -> dict[str, ObjectInfo]:
    """The objects one split needs in the cache (what its local reader opens and checks)."""
    if dataset == "cifar10":  # the local reader checks every release file, whichever split it opens
        return listing
    if dataset == "imagefolder":
        other = f"{folder_key}/{'val' if train else 'train'}/"
        return {k: v for k, v in listing.items() if not k.startswith(other)}
    # pets: everything except the images/trimaps of the other split
    media = (f"{folder_key}/images/", f"{folder_key}/annotations/trimaps/")
    split_key = f"{folder_key}/annotations/{'trainval' if train else 'test'}.txt"
    ids = set(_pets_split_ids(read_text(split_key), f"s3://{bucket}/{split_key}"))
    keep = {}
    for k, v in listing.items():
        if k.startswith(media):
            if k.rsplit("/", 1)[1].rsplit(".", 1)[0] not in ids:
                continue
        keep[k] = v
    return keep


def open_cached(cfg: RunConfig, loc: Location, endpoint: str, train: bool, listing: dict[str, ObjectInfo]) -> Any:
    """Sync what the split needs into the cache, then open it with the local reader."""
    folder = FOLDERS[cfg.dataset]
    folder_key = loc.key(folder)
    local_root = Path(cfg.s3_cache).resolve() / loc.bucket / loc.prefix if loc.prefix else \
        Path(cfg.s3_cache).resolve() / loc.bucket

    def read_text(key: str) -> str:
        try:
            return read_object(endpoint, loc.bucket, key).decode("utf-8", "replace")
        except S3ReadError as e:
            raise ConfigError(f"incomplete {TITLES[folder]} at {loc.url(folder)}/: {e}") from None

    needed = _split_keys(cfg.dataset, loc.bucket, folder_key, listing, train, read_text)
    try:
        with s3_errors(f"downloading {loc.url(folder)}/ into {cfg.s3_cache}", endpoint, loc.bucket):
            sync_to_cache(endpoint, loc.bucket, needed, cfg.s3_cache)
    except OSError as e:  # cache folder not writable, disk full (network errors arrive as botocore's)
        raise ConfigError(f"cannot fill the S3 cache {cfg.s3_cache}: {e.strerror or type(e).__name__}") from None
    return importlib.import_module(READERS[cfg.dataset]).open_split(cfg.replace(data_root=str(local_root), s3_cache=""), train)


# --------------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------------
def open_datasets(cfg: RunConfig) -> DataBundle:
    """Train and validation datasets under ``cfg.data_root`` (s3://), streamed or through the cache.

    Raises ConfigError (one line) for a bad URL or endpoint, a missing bucket or dataset prefix,
    denied access or an unreachable endpoint; the probe that decides those is bounded (seconds)."""
    loc = parse_url(cfg.data_root)
    endpoint = resolve_endpoint(cfg.s3_endpoint)
    folder = FOLDERS[cfg.dataset]
    # Import the reader (torch, torchvision) before the clock starts, as the local path does.
    importlib.import_module(READERS[cfg.dataset])
    import torchvision.datasets.folder  # noqa: F401
    probe(loc, endpoint, folder)
    size = cfg.image_size

    if cfg.s3_cache:
        listing: dict[str, ObjectInfo] = {}

        def load(train: bool) -> Any:
            if not listing:  # inside the train load's timing: listing is part of fetching
                with s3_errors(f"listing {loc.url(folder)}/", endpoint, loc.bucket):
                    listing.update(list_objects(client_for(endpoint), loc.bucket, loc.key(folder) + "/"))
            return open_cached(cfg, loc, endpoint, train, listing)
    else:
        opener = _STREAM_OPENERS[cfg.dataset]

        def load(train: bool) -> Any:
            return opener(loc, endpoint, train, size)

    train, rec_train = timed_load("train", lambda: load(True))
    val, rec_val = timed_load("val", lambda: load(False))
    if cfg.dataset == "oxford-pets":
        from study.data.pets import CLASSES

        classes = list(CLASSES)
    else:
        classes = list(train.classes)
        if list(val.classes) != classes:
            raise ConfigError(f"train and val class lists differ under {cfg.data_root} ({len(classes)} vs "
                              f"{len(val.classes)})")
    return DataBundle(train=take_subset(train, cfg.subset, cfg.seed), val=take_subset(val, cfg.val_subset, cfg.seed),
                      num_classes=len(classes), loads=[rec_train, rec_val], classes=classes)


def local_files(root: str | os.PathLike) -> list[tuple[Path, str]]:
    """(file, key relative to the prefix) of every dataset file under ``root``, following links (an
    ``imagenet`` prepared from ILSVRC is a tree of links)."""
    root = Path(root)
    out: list[tuple[Path, str]] = []
    for folder in (CIFAR_FOLDER, PETS_FOLDER, IMAGEFOLDER_FOLDER):
        top = root / folder
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


def _etag_matches(path: Path, etag: str) -> bool:
    etag = etag.strip('"')
    if "-" in etag or len(etag) != 32:  # multipart ETag: not an MD5 of the content; size had to do
        return True
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest() == etag


def upload(root: str, url: str, endpoint: str) -> None:
    """Copy the datasets under ``root`` to ``url`` (s3://bucket/prefix), native layout, skipping
    objects already there with the same content. Rich progress bar on stderr."""
    from boto3.s3.transfer import TransferConfig
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    loc = parse_url(url)
    endpoint = resolve_endpoint(endpoint)
    files = local_files(root)
    if not files:
        raise ConfigError(f"nothing to upload: no {CIFAR_FOLDER}, {PETS_FOLDER} or {IMAGEFOLDER_FOLDER} folder "
                          f"under {root}; run ./prepare.sh --root {root} --synthetic (or --cifar/--pets/--imagenet) "
                          f"first")
    probe_client = make_client(endpoint, probe=True, pool=1)
    with s3_errors(f"checking bucket {loc.bucket!r}", endpoint, loc.bucket):
        probe_client.head_bucket(Bucket=loc.bucket)
    client = client_for(endpoint)
    existing: dict[str, dict] = {}
    with s3_errors(f"listing {loc.url()}", endpoint, loc.bucket):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket,
                                                                       Prefix=loc.key() + "/" if loc.prefix else ""):
            for obj in page.get("Contents", ()):
                existing[obj["Key"]] = obj
    todo = []
    for path, rel in files:
        key = loc.key(rel)
        old = existing.get(key)
        if old is not None and int(old["Size"]) == path.stat().st_size and _etag_matches(path, old.get("ETag", "")):
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
                if not _is_s3_error(e) and cause is not None and _is_s3_error(cause):
                    raise cause from None
                raise
        if not todo:
            progress.update(task, completed=1)
    print(f"{len(todo)} of {len(files)} files uploaded ({total / 2**20:.1f} MiB); "
          f"{len(files) - len(todo)} already there unchanged", flush=True)
