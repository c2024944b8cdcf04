"""RESP2 on one asyncio stream, replies parsed by hiredis: the batching bridge's wire.

Why not redis-py's pipeline for the bridge: it costs about 18 µs of CPU per
command here in batches of 15 (every argument through its encoder, a
`QUEUED` reply parsed and a response callback run per command), which made
Redis the largest single cost of a classroom join. Packing a batch as one
bytes object and feeding the replies to hiredis' C reader costs about 7 µs
per command, the batch's round trip included (`bench/redis_bench.py` prints
both). redis-py still parses the URL (every form it documents) and serves the
keyspace subscription.

Replies are RESP2 as hiredis gives them: bytes, int, None, lists (HGETALL a
flat field/value list), and `hiredis.ReplyError` instances for error replies,
returned, not raised, also inside an `EXEC` array.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url

ReplyError = hiredis.ReplyError

_READ_BYTES = 256 * 1024


class EncodingError(ValueError):
    """An argument RESP cannot carry (None, a bool, a dict …): the caller's mistake."""


def pack(commands: Sequence[Sequence[Any]]) -> bytes:
    """Commands as one RESP2 byte string: arrays of bulk strings.

    str is sent as UTF-8, int and float as their decimal text, bytes as they
    are; anything else (None, bool, containers) is an `EncodingError`, as
    redis-py refuses them too.
    """
    out: list[bytes] = []
    append = out.append
    for command in commands:
        append(b"*%d\r\n" % len(command))
        for arg in command:
            if isinstance(arg, str):
                data = arg.encode()
            elif isinstance(arg, bytes | bytearray | memoryview):
                data = bytes(arg)
            elif isinstance(arg, int) and not isinstance(arg, bool):
                data = b"%d" % arg
            elif isinstance(arg, float):
                data = repr(arg).encode()
            else:
                raise EncodingError(
                    f"cannot send {type(arg).__name__} to redis (command {command[0]!r})")
            append(b"$%d\r\n" % len(data))
            append(data)
            append(b"\r\n")
    return b"".join(out)


def _tls_context(params: Mapping[str, Any]) -> ssl.SSLContext:
    """`rediss://` as redis-py reads its query: CA file, client certificate, checks."""
    context = ssl.create_default_context(cafile=params.get("ssl_ca_certs"))
    if params.get("ssl_certfile"):
        context.load_cert_chain(params["ssl_certfile"], params.get("ssl_keyfile"))
    if params.get("ssl_check_hostname") is False:
        context.check_hostname = False
    if params.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class RespConnection:
    """One connection: write a packed request, read exactly that many replies.

    Not safe for concurrent use (the bridge's single worker is its only user).
    After any error or cancellation mid-request the stream's position is
    unknown: the owner must `close()` it and open another.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = hiredis.Reader()

    @classmethod
    async def open(cls, url: str, *, name: str | None = None) -> RespConnection:
        """Connect as the URL says (host/port or unix socket, TLS, user, password, db)."""
        params = parse_url(url)
        if "path" in params:
            reader, writer = await asyncio.open_unix_connection(params["path"])
        else:
            context = _tls_context(params) if params.get("connection_class") is SSLConnection \
                else None
            reader, writer = await asyncio.open_connection(
                params.get("host", "localhost"), params.get("port", 6379), ssl=context)
        conn = cls(reader, writer)
        try:
            setup: list[tuple[Any, ...]] = []
            if params.get("password") is not None:
                user = params.get("username")
                setup.append(("AUTH", user, params["password"]) if user
                             else ("AUTH", params["password"]))
            if params.get("db"):
                setup.append(("SELECT", params["db"]))
            if name:
                setup.append(("CLIENT", "SETNAME", name))
            if setup:
                for reply in await conn.request(pack(setup), len(setup)):
                    if isinstance(reply, ReplyError):
                        raise ConnectionError(f"redis refused the connection's setup: {reply}")
        except BaseException:
            conn.close()
            raise
        return conn

    async def request(self, payload: bytes, replies: int) -> list[Any]:
        """Send `payload` and return its `replies` replies (error replies as values)."""
        self._writer.write(payload)
        await self._writer.drain()  # at once unless a large batch fills the send buffer
        out: list[Any] = []
        parser = self._parser
        while len(out) < replies:
            reply = parser.gets()
            if reply is False:
                data = await self._reader.read(_READ_BYTES)
                if not data:
                    raise EOFError("redis closed the connection")
                parser.feed(data)
                continue
            out.append(reply)
        return out

    def close(self) -> None:
        try:
            self._writer.close()
        except RuntimeError:  # its event loop is already closed: so is the socket
            pass
