"""What the front listener hands to handlers: a parsed `Request`, and the `Response` it expects.

Both are plain frozen values with no I/O, so the session layer (Engine.IO
long-polling, WebSocket sessions) is written and tested without sockets.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote

import attrs
import orjson


@attrs.frozen
class Request:
    """One HTTP request head, as the front listener parsed it.

    `query` keeps the last value of a repeated parameter (Socket.IO and our JSON
    clients never repeat one); `raw_query` is there for anything else. Header
    names are lower-case; values are latin-1 strings, as HTTP/1.1 defines them.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: tuple[tuple[str, str], ...]
    client: tuple[str, int]
    raw_query: str = ""

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header `name` (case-insensitive)."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return default

    @property
    def client_ip(self) -> str:
        return self.client[0]


@attrs.frozen
class Response:
    """What a polling handler answers; the listener adds Content-Length and keep-alive."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=UTF-8"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(
        cls, body: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()
    ) -> Response:
        return cls(status, orjson.dumps(body), "application/json", tuple(headers))

    @classmethod
    def error(cls, status: int, code: str, message: str) -> Response:
        """The daemon's HTTP error shape (PROTOCOL.md §1c): `{"error": {"code", "message"}}`."""
        return cls.json({"error": {"code": code, "message": message}}, status)


def parse_request(
    method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]], client: tuple[str, int]
) -> Request:
    """Build a `Request` from h11's request head (never raises on odd input)."""
    raw_path, _, raw_query = target.decode("latin-1").partition("?")
    query = dict(parse_qsl(raw_query, keep_blank_values=True))
    return Request(
        method=method.decode("latin-1"),
        path=unquote(raw_path),
        query=query,
        headers=tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers),
        client=client,
        raw_query=raw_query,
    )
