"""S3 failures as one line, and the one retry rule for reads.

Secrets: every line is built here from the error code and the bucket/endpoint, never from a
botocore message or request, and ConfigErrors are raised ``from None`` so no chained exception
carries request details along.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

from botocore import exceptions as bx

from study.core.config import ConfigError
from study.data.s3.urls import shown_endpoint

T = TypeVar("T")

READ_ATTEMPTS = 3  # botocore retries a request until its headers arrive; a body cut short is ours
RETRY_PAUSE = 0.2  # seconds before the second attempt, doubled before each later one

DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
          "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "InvalidSecurity", "403", "Forbidden"}
NO_BUCKET = {"NoSuchBucket"}
THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded"}


class S3ReadError(RuntimeError):
    """An object could not be read while training (after retries). One line, no secrets."""


def describe(e: BaseException, what: str, endpoint: str, bucket: str = "") -> str:
    """One line for an S3 failure while doing ``what`` (e.g. "listing s3://b/p/cifar-10-batches-py/").
    ``bucket`` is given for bucket-level calls (list, head), where a bare 404 means no such bucket."""
    at = shown_endpoint(endpoint)
    if isinstance(e, bx.ClientError):
        response = e.response if isinstance(e.response, dict) else {}
        code = str((response.get("Error") or {}).get("Code", "") or "")
        status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode", 0) or 0)
        if code in NO_BUCKET or (bucket and code in ("404", "NotFound")):
            return f"bucket {bucket or '?'!r} does not exist at {at} ({what})"
        if code in DENIED or status == 403:
            return (f"access denied {what} at {at} ({code or status}); check the credentials the standard AWS "
                    f"chain finds (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws, instance role)")
        if code in ("NoSuchKey", "404", "NotFound"):
            return f"object not found {what} at {at}"
        if status >= 500 or code in THROTTLED:
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


def is_s3_error(e: BaseException) -> bool:
    return isinstance(e, (bx.BotoCoreError, bx.ClientError))


def is_transient(e: BaseException) -> bool:
    """A failure worth another try at our level: the connection or the body broke. (Throttling and
    5xx answers are botocore's to retry; another ClientError will not go away.)"""
    return not isinstance(e, bx.ClientError) and (is_s3_error(e) or isinstance(e, OSError))


def retry(action: Callable[[], T], attempts: int = READ_ATTEMPTS, pause: float = RETRY_PAUSE) -> T:
    """``action()``, tried again after a growing pause while it fails transiently, ``attempts`` tries
    in all. Any other failure, or the last one, propagates as raised."""
    for attempt in range(attempts - 1):
        try:
            return action()
        except Exception as e:  # noqa: BLE001 — only transient failures are retried
            if not is_transient(e):
                raise
        time.sleep(pause * 2**attempt)
    return action()


@contextmanager
def s3_errors(what: str, endpoint: str, bucket: str = "") -> Iterator[None]:
    """Turn botocore's exceptions into a one-line ConfigError."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 — only botocore's are translated
        if not is_s3_error(e):
            raise
        raise ConfigError(describe(e, what, endpoint, bucket)) from None
