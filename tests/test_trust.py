"""Trust: nothing the study reads from disk or a bucket can run code. Checked on the source itself, so
a new call site cannot slip in: every torch.load passes weights_only=True, nothing calls pickle.load(s)
or yaml.load directly (restricted Unpickler subclasses and yaml.safe_load are the ways in).
The cache's refusal of S3 keys that leave it is tested in tests/data/test_s3.py."""
from __future__ import annotations

import ast
import functools
from pathlib import Path

from tests.util import REPO

SOURCES = sorted(p for d in ("study", "optimizations") for p in (REPO / d).rglob("*.py"))


@functools.cache
def call_nodes() -> list[tuple[Path, ast.Call]]:
    """Every call in the sources, parsed once for all the checks here."""
    return [(path, node) for path in SOURCES for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.Call)]


def calls(name: str):
    """(file:line, ast.Call) of every call spelled ``<module>.<attr>`` == ``name`` in the sources."""
    module, _, attr = name.rpartition(".")
    for path, node in call_nodes():
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == attr and isinstance(f.value, ast.Name) and f.value.id == module:
            yield f"{path.relative_to(REPO)}:{node.lineno}", node


def test_every_torch_load_is_weights_only() -> None:
    found = list(calls("torch.load"))
    assert found, "the scan found no torch.load at all"
    for where, node in found:
        kw = {k.arg: k.value for k in node.keywords}
        assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, where


def test_nothing_unpickles_or_loads_yaml_unrestricted() -> None:
    for name in ("pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load"):
        assert not list(calls(name)), name
