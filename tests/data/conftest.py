"""Fixtures of the data tests."""
from __future__ import annotations

import sys

import pytest


@pytest.fixture
def without_boto3(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if boto3 were not installed: the S3 package is imported afresh and its ``import boto3`` fails.
    The loaded package and its submodules are put back afterwards."""
    import study.data
    import study.data.s3  # noqa: F401 — loaded now so that all of it is restored after the test

    for name in [m for m in sys.modules if m == "study.data.s3" or m.startswith("study.data.s3.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delattr(study.data, "s3")
    monkeypatch.setitem(sys.modules, "boto3", None)
