"""MD5 of a file, read in chunks: the one place a file's content is hashed (the CIFAR release check,
the upload's "already there, same content" check)."""
from __future__ import annotations

import hashlib
import os

CHUNK = 1 << 20


def file_md5(path: str | os.PathLike) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
