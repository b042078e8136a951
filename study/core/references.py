"""References to a user's code: `FILE.py:NAME` or `package.module:NAME`, resolved to the object they name.

A reference is a string, so it travels to every stage process inside the stage spec and is imported
there again; an object could not (a fresh process cannot import a function defined in a notebook).
Every failure is one ConfigError line that names the reference: the file is missing, the module does
not import (the import error's last line), the name is not in it.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from study.core.errors import ConfigError
from study.core.config_checks import LIBRARIES, check_reference, is_reference  # noqa: F401 (re-exported)

def _last_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


def load_module(head: str, ref: str) -> Any:
    if head.endswith(".py"):
        path = Path(head).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"{ref}: file {head} not found")
        name = f"study_plugin_{path.stem}_{abs(hash(str(path))) % 10**8}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"{ref}: {head} cannot be imported as Python")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before running it: pickling and dataclasses look the module up by name
        sys.path.insert(0, str(path.parent))  # its own imports of files beside it
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 — whatever the user's file raises is bad input here
            del sys.modules[name]
            raise ConfigError(f"{ref}: importing {head} failed: {_last_line(e)}") from None
        finally:
            sys.path.remove(str(path.parent))
        return module
    try:
        return importlib.import_module(head)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"{ref}: module {head} does not import: {_last_line(e)}; put its folder on PYTHONPATH "
                          f"or give FILE.py:NAME") from None


def resolve(ref: str) -> Any:
    """The object `ref` names."""
    head, _, name = ref.partition(":")
    module = load_module(head, ref)
    try:
        return getattr(module, name)
    except AttributeError:
        have = sorted(n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n)))[:8]
        raise ConfigError(f"{ref}: {head} has no {name}" + (f" (it has: {', '.join(have)})" if have else "")) from None
