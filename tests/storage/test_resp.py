"""The bridge's RESP wire: packing, and connecting as the URL says (password, user, db)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from pratico_daemon.storage.aio import aio_as_trio
from pratico_daemon.storage.bridge import Op, RedisBridge
from pratico_daemon.storage.protocols import StorageUnavailable
from pratico_daemon.storage.resp import EncodingError, ReplyError, RespConnection, pack
from tests.support.redis import REDIS_URL


def test_pack_is_resp2_arrays_of_bulk_strings() -> None:
    assert pack([("SET", "clé", b"\x00\xff"), ("PEXPIRE", "k", 1500), ("X", 0.25)]) == (
        b"*3\r\n$3\r\nSET\r\n$4\r\ncl\xc3\xa9\r\n$2\r\n\x00\xff\r\n"
        b"*3\r\n$7\r\nPEXPIRE\r\n$1\r\nk\r\n$4\r\n1500\r\n"
        b"*2\r\n$1\r\nX\r\n$4\r\n0.25\r\n"
    )


@pytest.mark.parametrize("bad", [None, True, {"a": 1}, ["a"], object()])
def test_pack_refuses_what_redis_cannot_carry(bad: object) -> None:
    with pytest.raises(EncodingError, match="cannot send"):
        pack([("SET", "k", bad)])


async def test_replies_come_back_as_hiredis_parses_them(aio_loop: object) -> None:
    async def roundtrip() -> list[object]:
        conn = await RespConnection.open(REDIS_URL)
        try:
            return await conn.request(pack([
                ("SET", "pratico:test:resp", "v"), ("GET", "pratico:test:resp"),
                ("DEL", "pratico:test:resp"), ("GET", "pratico:test:resp"),
                ("NOSUCHCOMMAND",)]), 5)
        finally:
            conn.close()

    ok, value, deleted, missing, error = await aio_as_trio(roundtrip)()
    assert (ok, value, deleted, missing) == (b"OK", b"v", 1, None)
    assert isinstance(error, ReplyError)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _redis_server(tmp_path: Path, *args: str) -> Iterator[int]:
    """A throwaway redis-server (not the shared one) with `args`, where "{port}"
    stands for the free port it listens on."""
    server = shutil.which("redis-server")
    assert server is not None, "redis-server is needed (scripts/services installs it)"
    port = _free_port()
    proc = subprocess.Popen(
        [server, *(a.replace("{port}", str(port)) for a in args), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server with a password and an ACL user."""
    with _redis_server(tmp_path, "--port", "{port}", "--requirepass", "s3cret",
                       "--user", "app", "on", ">app-pass", "~*", "+@all") as port:
        yield port


async def test_the_bridge_authenticates_and_selects_the_urls_db(
    aio_loop: object, private_redis: int
) -> None:
    port = private_redis
    for url in (f"redis://:s3cret@127.0.0.1:{port}/3", f"redis://app:app-pass@127.0.0.1:{port}/3"):
        async with trio.open_nursery() as inner:
            bridge = RedisBridge(url, name="pratico-test")
            await inner.start(bridge.run)
            db, name = await bridge.call(Op(
                (("CLIENT", "INFO"), ("CLIENT", "GETNAME")),
                lambda r: (r[0].split(b" db=")[1].split(b" ")[0], r[1])))
            assert (db, name) == (b"3", b"pratico-test")
            inner.cancel_scope.cancel()

    # A wrong password: the bridge reports Redis unavailable, never crashes.
    async with trio.open_nursery() as inner:
        bridge = RedisBridge(f"redis://:wrong@127.0.0.1:{port}/0")
        await inner.start(bridge.run)
        with pytest.raises(StorageUnavailable, match="refused the connection's setup"):
            await bridge.call(Op((("PING",),), lambda r: r[0]))
        inner.cancel_scope.cancel()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (openssl, as on every Debian machine)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A redis-server speaking TLS only, with a self-signed certificate."""
    cert, key = _self_signed(tmp_path)
    with _redis_server(tmp_path, "--port", "0", "--tls-port", "{port}",
                       "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                       "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no") as port:
        yield port, cert


async def test_rediss_verifies_the_server_as_the_url_says(
    aio_loop: object, tls_redis: tuple[int, Path]
) -> None:
    port, cert = tls_redis

    async def ping(url: str) -> object:
        conn = await RespConnection.open(url)
        try:
            return (await conn.request(pack([("PING",)]), 1))[0]
        finally:
            conn.close()

    base = f"rediss://127.0.0.1:{port}/0"
    assert await aio_as_trio(ping)(f"{base}?ssl_ca_certs={cert}") == b"PONG"
    assert await aio_as_trio(ping)(f"{base}?ssl_cert_reqs=none") == b"PONG"
    with pytest.raises(ssl.SSLCertVerificationError):
        await aio_as_trio(ping)(base)  # self-signed, not in the system's CAs
