"""A trio-websocket client whose TCP stream the test owns, so it is always closed.

trio-websocket 0.12.2's `open_websocket_url` never closes its TCP stream when the
server starts the closing handshake (its `aclose` returns early once a close
reason is set); with `filterwarnings = error` the leaked socket fails a later
test at garbage collection. Every test connects through `ws_client` instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import trio
from trio_websocket import WebSocketConnection, wrap_client_stream


@asynccontextmanager
async def ws_client(url: str, **options: Any) -> AsyncIterator[WebSocketConnection]:
    parts = urlsplit(url)
    resource = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        async with trio.open_nursery() as nursery:
            stream = await trio.open_tcp_stream(parts.hostname or "", parts.port or 80)
            async with stream:
                ws = await wrap_client_stream(nursery, stream, parts.netloc, resource, **options)
                try:
                    yield ws
                finally:
                    await ws.aclose()
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # unwrap, like open_websocket_url does
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
