"""How a `Broadcast` becomes bytes for each framing (installed once at import).

- Socket.IO over a WebSocket: a ready-to-send WebSocket frame of
  `42/ns,["name",{…},"<offset>"]` — the trailing offset is Socket.IO's
  connection-state-recovery marker, which clients echo when they reconnect.
- Socket.IO over long-polling: the same Engine.IO text, queued for the next GET.
- Plain JSON over a WebSocket: a frame of `{"type": name, …payload, "offset": n}`
  (PROTOCOL.md §1b; `offset` is what a JSON client sends back to `resume`).
"""

from __future__ import annotations

from typing import Any

import orjson

from pratico_daemon.protocol import socketio
from pratico_daemon.rooms.broadcast import Broadcast, Framing, register_encoder
from pratico_daemon.transport import encode_text_frame


def socketio_text(b: Broadcast) -> str:
    return socketio.encode_event_frame(b.namespace, b.name, b.payload, offset=str(b.offset))


def socketio_ws_frame(b: Broadcast) -> bytes:
    return encode_text_frame(socketio_text(b))


def json_text(b: Broadcast) -> str:
    body: dict[str, Any] = {"type": b.name}
    body.update(b.payload)
    body["type"] = b.name
    body["offset"] = b.offset
    return orjson.dumps(body).decode()


def json_ws_frame(b: Broadcast) -> bytes:
    return encode_text_frame(json_text(b))


register_encoder(Framing.SOCKETIO_WS, socketio_ws_frame)
register_encoder(Framing.SOCKETIO_POLLING, socketio_text)
register_encoder(Framing.JSON_WS, json_ws_frame)
