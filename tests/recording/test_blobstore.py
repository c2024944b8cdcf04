"""The S3 blob store against a real moto S3 server on loopback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio

from pratico_daemon.recording.blobstore import BlobStoreError, S3BlobStore
from tests.recording.conftest import MotoS3


async def test_put_file_streams_the_file_and_returns_its_url(moto_s3: MotoS3,
                                                           tmp_path: Path) -> None:
    store = S3BlobStore(moto_s3.section())
    path = tmp_path / "rec.ogg"
    payload = bytes(range(256)) * 40_000  # 10 MB: more than one read chunk
    path.write_bytes(payload)
    key = store.full_key("s1.ogg")
    assert key == "recordings/s1.ogg"
    assert not await store.exists(key)
    url = await store.put_file(key, path, "audio/ogg")
    assert url == f"{moto_s3.endpoint_url}/{moto_s3.bucket}/recordings/s1.ogg"
    assert await store.exists(key)
    assert moto_s3.get(key) == payload
    assert await store.get_bytes(key) == payload
    # Putting again replaces (an upload retried after a crash is harmless).
    path.write_bytes(b"second")
    await store.put_file(key, path)
    assert moto_s3.get(key) == b"second"


async def test_public_base_url_names_the_object(moto_s3: MotoS3, tmp_path: Path) -> None:
    store = S3BlobStore(moto_s3.section(public_base_url="https://rec.example.org/"))
    path = tmp_path / "a.ogg"
    path.write_bytes(b"x")
    assert await store.put_file("recordings/a.ogg", path) == \
        "https://rec.example.org/recordings/a.ogg"


async def test_a_missing_bucket_is_a_permanent_error(moto_s3: MotoS3, tmp_path: Path) -> None:
    store = S3BlobStore(moto_s3.section(bucket="no-such-bucket"), total_timeout_s=30)
    path = tmp_path / "a.ogg"
    path.write_bytes(b"x")
    with trio.fail_after(10):  # not retried for 30 s: a 404 will not heal by itself
        with pytest.raises(BlobStoreError, match="NoSuchBucket"):
            await store.put_file("k", path)


async def test_an_unreachable_endpoint_is_retried_within_a_bounded_time(
        tmp_path: Path, moto_s3: MotoS3) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = S3BlobStore(moto_s3.section(endpoint_url=f"http://127.0.0.1:{port}"),
                        total_timeout_s=1.5, first_backoff_s=0.05)
    path = tmp_path / "a.ogg"
    path.write_bytes(b"x")
    start = trio.current_time()
    with pytest.raises(BlobStoreError, match="gave up"):
        await store.put_file("k", path)
    assert trio.current_time() - start < 5


async def test_an_endpoint_that_comes_back_is_reached_by_a_retry(tmp_path: Path) -> None:
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3 = None
    bucket = "late-bucket"
    path = tmp_path / "a.ogg"
    path.write_bytes(b"late")

    async def start_late() -> None:
        nonlocal s3
        await trio.sleep(0.8)
        await trio.to_thread.run_sync(server.start)
        s3 = MotoS3(server, bucket)
        await trio.to_thread.run_sync(lambda: s3.client().create_bucket(Bucket=bucket))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(start_late)
            probe = MotoS3.__new__(MotoS3)
            probe.endpoint_url = f"http://127.0.0.1:{port}"
            probe.bucket = bucket
            store = S3BlobStore(probe.section(), total_timeout_s=20, first_backoff_s=0.1,
                                max_backoff_s=0.3)
            # The first attempts meet a closed port and are retried. Between the
            # server's start and the bucket's creation a PUT may get NoSuchBucket,
            # a permanent error (not retried by the store): the test tries again.
            with trio.fail_after(15):
                while True:
                    try:
                        await store.put_file("k", path)
                        break
                    except BlobStoreError as exc:
                        if "NoSuchBucket" not in str(exc):
                            raise
                        await trio.sleep(0.05)
        assert s3 is not None
        assert s3.get("k") == b"late"
    finally:
        server.stop()
