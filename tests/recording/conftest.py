"""A real S3 server for the recording tests: moto's server mode on 127.0.0.1.

One server per test (function scope), on a port the kernel chooses. moto keeps
its buckets in process-wide memory (every server in this process sees them),
so each test gets a bucket of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pratico_daemon.config import RecordingSection


class MotoS3:
    def __init__(self, server: Any, bucket: str = "") -> None:
        self.server = server
        self.bucket = bucket or f"rec-{uuid.uuid4().hex[:12]}"
        host, port = server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"

    def section(self, **overrides: Any) -> RecordingSection:
        values: dict[str, Any] = {
            "enabled": True, "endpoint_url": self.endpoint_url, "bucket": self.bucket,
            "key_prefix": "recordings/", "region": "us-east-1",
            "access_key_id": "testing", "secret_access_key": "testing"}
        values.update(overrides)
        return RecordingSection(**values)

    def mapping(self, **overrides: Any) -> dict[str, Any]:
        section = self.section(**overrides)
        return {name: getattr(section, name) for name in (
            "enabled", "endpoint_url", "bucket", "key_prefix", "region",
            "access_key_id", "secret_access_key", "public_base_url")}

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=Config(signature_version="s3v4",
                                          s3={"addressing_style": "path"}))

    def keys(self) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=self.bucket)
        return [item["Key"] for item in listing.get("Contents", [])]

    def get(self, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read())


@pytest.fixture
def moto_s3() -> Iterator[MotoS3]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        s3 = MotoS3(server)
        s3.client().create_bucket(Bucket=s3.bucket)
        yield s3
    finally:
        server.stop()
