"""Where the data is: ``s3://bucket/prefix`` locations and the endpoint URL, checked before any request.

Endpoints carrying ``user:password@`` are refused (RunConfig stores the endpoint, and it lands in
config.json); messages show an endpoint as scheme://host[:port] only.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from study.core.config import ConfigError, check_s3_endpoint

SCHEME = "s3://"

# Today's rule is 3-63 of [a-z0-9.-]; older us-east-1 buckets may also hold capitals and underscores.
# Never a slash, so a bucket name is one path component in the cache.
BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{1,253}[A-Za-z0-9]$")


def plain_bucket(name: str) -> bool:
    """True for a bucket name that is safe as one path component (no "..", no slash)."""
    return bool(BUCKET_RE.match(name)) and ".." not in name


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
    if "@" in bucket:  # s3://key:secret@bucket/...: refused without echoing the URL
        raise ConfigError("an s3:// URL must not carry credentials (key:secret@bucket); use the standard AWS "
                          "chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws)")
    if not plain_bucket(bucket):
        raise ConfigError(f"bad bucket name {bucket!r} in {url!r}: use s3://bucket/prefix with a bucket name of "
                          f"3-63 letters, digits, dots and hyphens")
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ConfigError(f"the prefix of {url!r} must not contain '.' or '..' parts")
    return Location(bucket, "/".join(parts))


def resolve_endpoint(endpoint: str = "") -> str:
    """The endpoint URL to use: the given one, else the environment's, else "" (AWS itself)."""
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3", "") or os.environ.get("AWS_ENDPOINT_URL", "")
    check_s3_endpoint(endpoint)  # the one endpoint rule, for endpoints from the environment too
    return endpoint.rstrip("/")


def shown_endpoint(endpoint: str) -> str:
    """The endpoint as printed in messages: scheme://host[:port] (no credentials, path or query)."""
    if not endpoint:
        return "AWS S3"
    parts = urlsplit(endpoint)
    host = parts.hostname or "?"
    port = f":{parts.port}" if valid_port(parts) else ""
    return f"{parts.scheme}://{host}{port}" if parts.scheme else host


def valid_port(parts: SplitResult) -> int | None:
    """The URL's port, or None when it has none or an unparsable one (urlsplit raises on those)."""
    try:
        return parts.port
    except ValueError:
        return None
