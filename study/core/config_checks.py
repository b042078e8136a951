"""Checks of single option values that the config and the data layer share: a reference to user code,
the S3 endpoint."""
from __future__ import annotations

from study.core.errors import ConfigError

# `--model torchvision:NAME` / `timm:NAME` name a library's own builders; any other `X:NAME` is the
# user's code (FILE.py:NAME or package.module:NAME, see study.core.references), imported in the preflight.
LIBRARIES = ("torchvision", "timm")


def is_reference(text: str) -> bool:
    """Whether `text` names user code (`x.py:f`, `pkg.mod:f`) rather than a built-in or a library's model."""
    head, sep, name = text.partition(":")
    return bool(sep and head and name) and head not in LIBRARIES


def check_reference(text: str, option: str) -> None:
    """ConfigError unless `text` has the form of a reference; what it names is imported later."""
    head, sep, name = text.partition(":")
    if not (sep and head and name and name.isidentifier()):
        raise ConfigError(f"--{option} {text!r}: give a built-in name, FILE.py:NAME or package.module:NAME")


def check_s3_endpoint(endpoint: str) -> None:
    """ConfigError unless `endpoint` is "" or an http(s)://host[:port] URL without credentials. The one
    rule for --s3-endpoint and AWS_ENDPOINT_URL alike; the message never echoes the URL, which may hold
    a secret."""
    if not endpoint:
        return
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("the S3 endpoint (--s3-endpoint or AWS_ENDPOINT_URL) must be an http(s)://host[:port] URL")
    if parts.username or parts.password:  # config.json would keep them: refuse
        raise ConfigError("the S3 endpoint must not carry credentials (user:password@); use the standard "
                          "AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws)")


def endpoint_parts(endpoint: str) -> tuple[str, int]:
    """("host", port) of a host:port rendezvous endpoint; ConfigError when it has no port."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65535:
        raise ConfigError(f"--rdzv-endpoint {endpoint!r} is not HOST:PORT (node 0's address and a free port, e.g. "
                          f"node0:29500)")
    return host, int(port)


def check_launch(nnodes: int, node_rank: int, endpoint: str, timeout: float) -> None:
    """A multi-node study names node 0 and each node's place in it."""
    if nnodes > 1 and not endpoint:
        raise ConfigError(f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT, node 0's address (under srun, Slurm's "
                          f"environment gives it)")
    if endpoint:
        endpoint_parts(endpoint)
    if not 0 <= node_rank < max(nnodes, 1):
        raise ConfigError(f"--node-rank {node_rank} is outside 0..{nnodes - 1} for --nnodes {nnodes}")
    if not timeout > 0:
        raise ConfigError(f"--rdzv-timeout must be positive seconds, got {timeout}")
