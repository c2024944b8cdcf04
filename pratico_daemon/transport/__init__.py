"""The transport: one front listener for HTTP/1.1 and WebSockets (h11 + `websockets`' core).

The session layer builds on these names only:

- `FrontListener(limits, metrics, app=..., handlers=Handlers(...))`,
  `await nursery.start(front.serve, host, port)` → "host:port",
  `await front.drain()`, `front.statistics()`.
- `Handlers(websocket=..., polling=..., drain=...)`: what runs per connection.
- `Request` / `Response`: an HTTP request head and a polling answer.
- `WebSocket`: `receive()`, `send_text()`, `send_frame_nowait()`, `close()`.
- `encode_text_frame(text)`: encode once, `send_frame_nowait` to many.
"""

from pratico_daemon.transport.frames import (
    GOING_AWAY,
    MESSAGE_TOO_BIG,
    SLOW_CONSUMER,
    encode_binary_frame,
    encode_close_frame,
    encode_text_frame,
)
from pratico_daemon.transport.front import (
    FrontListener,
    FrontStatistics,
    Handlers,
    refuse_polling,
    refuse_websocket,
)
from pratico_daemon.transport.http import Request, Response
from pratico_daemon.transport.websocket import ConnectionClosed, State, WebSocket

__all__ = [
    "GOING_AWAY",
    "MESSAGE_TOO_BIG",
    "SLOW_CONSUMER",
    "ConnectionClosed",
    "FrontListener",
    "FrontStatistics",
    "Handlers",
    "Request",
    "Response",
    "State",
    "WebSocket",
    "encode_binary_frame",
    "encode_close_frame",
    "encode_text_frame",
    "refuse_polling",
    "refuse_websocket",
]
