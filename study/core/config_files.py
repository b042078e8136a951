"""The outside of RunConfig: options read from a YAML/TOML file, and the field docstrings --help shows."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from study.core.config import SECTIONS, ConfigError


def field_docs() -> dict[str, str]:
    """Field docstrings, for --help. Read from the sections' source; dataclasses keep no docstrings."""
    import ast
    import inspect

    docs: dict[str, str] = {}
    for section in SECTIONS.values():
        body = ast.parse(inspect.getsource(section)).body[0].body  # type: ignore[attr-defined]
        for a, b in zip(body, body[1:]):
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
                docs[a.target.id] = " ".join(str(b.value.value).split())  # type: ignore[union-attr]
    return docs


def yaml_loader() -> type:
    """PyYAML's safe loader, reading numbers as YAML 1.2 does: PyYAML follows YAML 1.1, where a float
    needs a dot, so ``lr: 1e-3`` would arrive as the string "1e-3". Quoted values stay strings."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    exponent = re.compile(r"^[-+]?([0-9][0-9_]*(\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", exponent, list("-+0123456789."))
    return Loader


def load_config_file(path: str) -> dict[str, Any]:
    """Read a YAML or TOML file whose keys are CLI options (dashes or underscores)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); "
                          f"save it as UTF-8") from None
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            loader = yaml_loader()(text)  # a SafeLoader subclass, driven directly: no constructor runs code
            try:
                data = loader.get_single_data() or {}
            finally:
                loader.dispose()
        else:
            raise ConfigError(f"config file must end in .yaml, .yml or .toml: {path}")
    except ConfigError:
        raise
    except Exception as e:  # parser errors carry line numbers; one line is enough
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)  # YAML's error position
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"cannot parse config file {path}{where}: {msg}; fix its syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}
