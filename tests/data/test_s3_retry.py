"""The one retry rule of S3 reads (study.data.s3.errors.retry), and that reads and downloads use it."""
from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError, ResponseStreamingError

from study.data.s3 import S3ReadError, cache, client, errors
from study.data.s3.client import ObjectInfo
from study.data.s3.errors import retry


def cut_short() -> ResponseStreamingError:
    return ResponseStreamingError(error="connection reset while reading the body")


def denied() -> ClientError:
    return ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetObject")


class Flaky:
    """Raises the given exceptions on its first calls, then returns ``result``."""

    def __init__(self, *failures: BaseException, result: object = b"body") -> None:
        self.failures, self.result, self.calls = list(failures), result, 0

    def __call__(self) -> object:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.result


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(errors.time, "sleep", slept.append)
    return slept


def test_transient_failures_are_retried_then_succeed(pauses: list[float]) -> None:
    action = Flaky(ReadTimeoutError(endpoint_url="http://127.0.0.1:9"), OSError("connection reset"))
    assert retry(action, attempts=3) == b"body"
    assert action.calls == 3
    assert pauses == [errors.RETRY_PAUSE, 2 * errors.RETRY_PAUSE]


@pytest.mark.parametrize("failure", [denied(), ValueError("a bug, not the network")], ids=["client-error", "other"])
def test_permanent_failures_are_not_retried(pauses: list[float], failure: Exception) -> None:
    action = Flaky(failure)
    with pytest.raises(type(failure)):
        retry(action, attempts=3)
    assert action.calls == 1 and pauses == []


def test_gives_up_after_n_attempts(pauses: list[float]) -> None:
    action = Flaky(*[cut_short() for _ in range(10)])
    with pytest.raises(ResponseStreamingError):
        retry(action, attempts=4)
    assert action.calls == 4 and len(pauses) == 3


class FakeBody:
    def __init__(self, data: bytes, fail: BaseException | None) -> None:
        self.data, self.fail = data, fail

    def read(self) -> bytes:
        if self.fail:
            raise self.fail
        return self.data

    def iter_chunks(self, size: int):
        if self.fail:
            raise self.fail
        yield self.data


class FakeClient:
    """get_object whose body breaks on the first GETs, as a connection dropped mid-body does."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures, self.calls = list(failures), 0

    def get_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803 — boto3's argument names
        self.calls += 1
        if self.failures and isinstance(self.failures[0], ClientError):
            raise self.failures.pop(0)
        return {"Body": FakeBody(b"payload", self.failures.pop(0) if self.failures else None)}


def test_reads_and_downloads_retry_a_body_cut_short(monkeypatch: pytest.MonkeyPatch, pauses: list[float],
                                                    tmp_path: Path) -> None:
    fake = FakeClient(cut_short())
    monkeypatch.setattr(client, "client_for", lambda endpoint: fake)
    assert client.read_object("", "bucket", "key") == b"payload" and fake.calls == 2

    fake = FakeClient(cut_short(), cut_short())
    monkeypatch.setattr(cache, "client_for", lambda endpoint: fake)
    dest = tmp_path / "b" / "key"
    assert cache.download("", "bucket", "key", dest, ObjectInfo(7, 1_000_000.0)) == 7
    assert dest.read_bytes() == b"payload" and dest.stat().st_mtime == 1_000_000.0 and fake.calls == 3
    assert [p.name for p in dest.parent.iterdir()] == ["key"]  # no temporary file left


def test_a_read_that_cannot_succeed_is_one_line(monkeypatch: pytest.MonkeyPatch, pauses: list[float]) -> None:
    fake = FakeClient(denied())
    monkeypatch.setattr(client, "client_for", lambda endpoint: fake)
    with pytest.raises(S3ReadError, match="access denied reading s3://bucket/key") as e:
        client.read_object("", "bucket", "key")
    assert fake.calls == 1 and "\n" not in str(e.value)
    fake = FakeClient(*[cut_short() for _ in range(errors.READ_ATTEMPTS)])
    monkeypatch.setattr(client, "client_for", lambda endpoint: fake)
    with pytest.raises(S3ReadError, match="stopped answering"):
        client.read_object("", "bucket", "key")
    assert fake.calls == errors.READ_ATTEMPTS
