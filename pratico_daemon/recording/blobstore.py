"""Where finished recordings go: a `BlobStore` protocol and its S3-compatible implementation.

Why a protocol: the recorder only needs "put this file under this key and
tell me its URL" and "is this key there?"; production talks to Cloudflare R2
(or any S3-compatible service) through boto3, tests to a moto S3 server, and
neither the recorder nor the uploader knows which.

boto3 is blocking, so every call runs in a worker thread
(`trio.to_thread.run_sync`) under a `CapacityLimiter`: a burst of sessions
ending at the same minute cannot start more uploads (threads, sockets,
memory for multipart buffers) than the limiter allows. botocore's own
retries are switched off and replaced by ours, so that the *total* time of
a call is bounded by `total_timeout_s` (botocore's retries count attempts,
not seconds) and a cancelled caller stops waiting at once
(`abandon_on_cancel`: the thread finishes on its own, bounded by the
connect/read timeouts, and its result is dropped).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Protocol

import trio

from pratico_daemon import logs
from pratico_daemon.config import RecordingSection

log = logs.get("recording.blobstore")


class BlobStoreError(Exception):
    """The object store refused the call or stayed unreachable for the whole time budget."""


class BlobStore(Protocol):
    async def put_file(self, key: str, path: Path, content_type: str = ...) -> str:
        """Upload `path` under `key` (replacing any object there); return its URL."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""
        ...

    def url_for(self, key: str) -> str:
        """The URL clients use for `key` (no call to the store)."""
        ...


def _transient(exc: BaseException) -> bool:
    """Whether trying again may succeed: network trouble, throttling, 5xx."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = exc.response.get("Error", {}).get("Code", "")
        return status >= 500 or status == 429 or code in ("SlowDown", "RequestTimeout")
    return isinstance(exc, (BotoCoreError, OSError))


class S3BlobStore:
    """A bucket on an S3-compatible endpoint (R2, MinIO, AWS, moto), addressed path-style.

    Path-style (`endpoint/bucket/key`) works on every S3-compatible service
    including a moto server on 127.0.0.1, where virtual-host style would need
    DNS for `bucket.127.0.0.1`.
    """

    def __init__(self, conf: RecordingSection, *, max_workers: int = 4,
                 total_timeout_s: float = 120.0, attempt_timeout_s: float = 30.0,
                 first_backoff_s: float = 0.2, max_backoff_s: float = 5.0) -> None:
        if not conf.bucket:
            raise ValueError("recording.bucket is required for the S3 blob store")
        self.conf = conf
        self.bucket = conf.bucket
        self.key_prefix = conf.key_prefix
        self.total_timeout_s = total_timeout_s
        self.attempt_timeout_s = attempt_timeout_s
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.limiter = trio.CapacityLimiter(max_workers)
        self._max_workers = max_workers
        self._client: Any = None

    def __repr__(self) -> str:
        return f"<S3BlobStore {self.conf.endpoint_url or 'aws'} {self.bucket}>"

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config as BotoConfig

        boto_config = BotoConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            # STACK-NOTES.md: at least as many pooled connections as threads.
            max_pool_connections=max(10, self._max_workers),
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=min(10.0, self.attempt_timeout_s),
            read_timeout=self.attempt_timeout_s,
        )
        session = boto3.session.Session()
        return session.client(
            "s3",
            endpoint_url=self.conf.endpoint_url or None,
            region_name=self.conf.region or None,
            aws_access_key_id=self.conf.access_key_id or None,
            aws_secret_access_key=self.conf.secret_access_key or None,
            config=boto_config,
        )

    def _s3(self) -> Any:
        # Created on first use, in a worker thread (creating a client reads files
        # and builds endpoints: slow enough not to do it on the trio thread). A
        # boto3 client is thread-safe, so one serves every worker.
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def url_for(self, key: str) -> str:
        if self.conf.public_base_url:
            return f"{self.conf.public_base_url.rstrip('/')}/{key}"
        endpoint = self.conf.endpoint_url or f"https://s3.{self.conf.region}.amazonaws.com"
        return f"{endpoint.rstrip('/')}/{self.bucket}/{key}"

    def full_key(self, name: str) -> str:
        """`name` under the configured key prefix."""
        return f"{self.key_prefix}{name}"

    async def _call(self, what: str, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)` in a thread; retry transient failures with jittered backoff.

        Raises BlobStoreError on a permanent failure or when `total_timeout_s`
        is spent.
        """
        backoff = self.first_backoff_s
        attempt = 0
        last: BaseException | None = None
        with trio.move_on_after(self.total_timeout_s):
            while True:
                attempt += 1
                try:
                    return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter,
                                                         abandon_on_cancel=True)
                except Exception as exc:
                    if not _transient(exc):
                        raise BlobStoreError(f"{what}: {exc}") from exc
                    last = exc
                    log.warning("blob store %s failed (attempt %d): %s; retrying in %.1fs",
                                what, attempt, exc, backoff)
                await trio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self.max_backoff_s)
        raise BlobStoreError(f"{what}: gave up after {self.total_timeout_s:.0f}s "
                             f"and {attempt} attempts: {last}")

    async def put_file(self, key: str, path: Path,
                       content_type: str = "application/octet-stream") -> str:
        def put() -> None:
            # One PUT with the open file as body: botocore reads it in chunks (to
            # hash and to send), so memory stays bounded whatever the file's size;
            # a recording (Opus, ~15 MB for 30 minutes) is far below the 5 GB limit
            # of a single PUT. Each attempt reopens the file from its start.
            with path.open("rb") as body:
                self._s3().put_object(Bucket=self.bucket, Key=key, Body=body,
                                      ContentType=content_type)

        await self._call(f"put {key}", put)
        return self.url_for(key)

    async def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        def head() -> bool:
            try:
                self._s3().head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if status == 404 or exc.response.get("Error", {}).get("Code") in (
                        "404", "NoSuchKey", "NotFound"):
                    return False
                raise
            return True

        return bool(await self._call(f"head {key}", head))

    async def get_bytes(self, key: str) -> bytes:
        """The object's content (tests and operators; recordings are small enough)."""

        def get() -> bytes:
            body = self._s3().get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

        return bytes(await self._call(f"get {key}", get))
