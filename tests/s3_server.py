"""A real S3-protocol server on 127.0.0.1 for tests: moto's standalone server, spoken to over HTTP by
boto3 exactly as a study talks to AWS, MinIO or IBM COS (no in-process mocking of boto3).

Credentials are test values; the secret is distinctive so a grep of every output can prove it never
leaks. ``env`` is what a test puts into os.environ: the study runs its stages in child processes,
which inherit it. The shared AWS config files are pointed at paths that do not exist, so nothing from
the developer's ~/.aws (profiles, endpoints, SSO) takes part, and instance metadata is switched off
so the credential chain never leaves the machine.
"""
from __future__ import annotations

import logging
import socket
from pathlib import Path

SECRET = "studyTestSecret-9f3c2a7e-never-print-me"
ACCESS_KEY = "STUDYTESTACCESSKEY01"
REGION = "us-east-1"
BUCKET = "study-data"


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def aws_env(config_dir: Path) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(config_dir / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(config_dir / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


# Variables that would redirect or re-credential boto3 in the tests if the developer has them set.
CLEARED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN",
           "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
           "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE")


class LoopbackS3:
    """moto's ThreadedMotoServer on 127.0.0.1, on a port the OS picks (no race for a "free" port)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""

    def start(self) -> "LoopbackS3":
        self._server.start()
        host, port = self._server.get_host_and_port()
        assert host == "127.0.0.1"
        self.endpoint = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()
