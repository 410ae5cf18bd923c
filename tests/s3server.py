"""A real S3 endpoint on loopback for tests and benchmarks: moto's threaded server over HTTP.

``MotoS3`` starts ``moto.server.ThreadedMotoServer`` on 127.0.0.1 on a free port and gives the
environment s3fs/botocore need to reach it; ``RequestCounter`` counts the HTTP requests an s3fs
filesystem sends (botocore ``before-send`` events), by S3 operation.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import urllib.request
from collections.abc import Iterator

import boto3
import fsspec
import pytest
from moto.server import ThreadedMotoServer
from s3fs import S3FileSystem

from ztfluigi import storage

REGION = "us-east-1"
AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
            "AWS_PROFILE")  # fmt: skip


def reset_clients() -> None:
    """Drop cached s3fs filesystems: they keep the endpoint and credentials they were made with."""
    storage.reset_filesystems()
    S3FileSystem.clear_instance_cache()


def clear_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``AWS_*`` settings at all (nor ~/.aws files): only explicit options reach a server."""
    for key in AWS_VARS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    reset_clients()


class MotoS3:
    """A moto S3 server on 127.0.0.1 (free port); ``stop()`` shuts it down."""

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._werkzeug_level = logging.getLogger("werkzeug").level
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def stop(self) -> None:
        """Shut the server down and restore the request log level."""
        self._server.stop()
        logging.getLogger("werkzeug").setLevel(self._werkzeug_level)

    def env(self, key: str = "testing-key", secret: str = "testing-secret") -> dict[str, str]:
        """Environment variables pointing botocore/s3fs at this server with these credentials."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def use_env(self, monkeypatch: pytest.MonkeyPatch, **credentials: str) -> None:
        """Point the standard ``AWS_*`` environment at this server (``key=``, ``secret=``)."""
        clear_aws_env(monkeypatch)
        for key, value in self.env(**credentials).items():
            monkeypatch.setenv(key, value)
        reset_clients()

    def client(self):  # noqa: ANN201 - a boto3 S3 client
        """A boto3 client of this server, independent of the code under test."""
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id="inspector", aws_secret_access_key="inspector",
        )  # fmt: skip

    def create_bucket(self, name: str) -> str:
        """Create a bucket; return its name."""
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key of a bucket under ``prefix``."""
        paginator = self.client().get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def enforce_auth(self, enforced: bool) -> None:
        """Make the server check credentials against its (empty) IAM, or accept any again."""
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth", data=b"0" if enforced else b"inf",
            method="POST", headers={"Content-Type": "text/plain"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()


@contextlib.contextmanager
def moto_s3() -> Iterator[MotoS3]:
    """A running :class:`MotoS3`, stopped on exit."""
    server = MotoS3()
    try:
        yield server
    finally:
        server.stop()


class RequestCounter:
    """Count the HTTP requests an s3fs filesystem sends while active, by S3 operation."""

    def __init__(self, fs: fsspec.AbstractFileSystem) -> None:
        self._events = fs.s3.meta.events
        self.by_operation: collections.Counter[str] = collections.Counter()
        self.urls: list[str] = []

    def _count(self, request, event_name: str, **kwargs) -> None:  # noqa: ANN001
        self.by_operation[event_name.rsplit(".", 1)[-1]] += 1
        self.urls.append(f"{request.method} {request.url}")

    @property
    def total(self) -> int:
        return sum(self.by_operation.values())

    def __enter__(self) -> RequestCounter:
        self._events.register("before-send.s3", self._count, unique_id=f"count-{id(self)}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._events.unregister("before-send.s3", unique_id=f"count-{id(self)}")
