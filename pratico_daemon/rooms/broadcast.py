"""A server event encoded at most once per framing, shared by every recipient.

DESIGN.md, "Encode once, send many": a room builds one `Broadcast` per event;
each member asks it for the bytes of its own framing (`Framing.SOCKETIO`,
`Framing.JSON`, …) and the first request of each framing pays the encoding.
Encoders are registered by the session layer (which knows the codecs), so this
module depends on nothing above it.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Mapping
from typing import Any


class Framing(enum.StrEnum):
    """How a member's connection frames events (PROTOCOL.md §1a/§1b).

    A StrEnum so that the per-delivery frame lookup hashes in C (an Enum's hash
    is Python code: a third of the fan-out cost, bench/gateway_bench.py).
    """

    SOCKETIO_WS = "socketio-ws"  # WebSocket frame carrying "42/ns,[...]"
    SOCKETIO_POLLING = "socketio-polling"  # Engine.IO packet text, queued for a poll
    JSON_WS = "json-ws"  # WebSocket frame carrying {"type": ..., ...}


Encoder = Callable[["Broadcast"], Any]
"""Broadcast -> whatever a member's connection sends for that framing."""

_ENCODERS: dict[Framing, Encoder] = {}


def register_encoder(framing: Framing, encoder: Encoder) -> None:
    """Install the encoder of a framing (done once by the session layer at import)."""
    _ENCODERS[framing] = encoder


_OFFSETS = itertools.count(1)


class Broadcast:
    """One event for many members; `frame(framing)` encodes lazily, once per framing.

    `offset` is unique and increasing within the process: Socket.IO clients echo
    the last one they saw when they reconnect (connection-state recovery), and
    the gateway replays what came after it.
    """

    __slots__ = ("frames", "name", "namespace", "offset", "payload")

    def __init__(self, namespace: str, name: str, payload: Mapping[str, Any]) -> None:
        self.namespace = namespace
        self.name = name
        self.payload = payload
        self.offset = next(_OFFSETS)
        # Encoded frames by framing; members may read it directly on the hot path.
        self.frames: dict[Framing, Any] = {}

    def frame(self, framing: Framing) -> Any:
        try:
            return self.frames[framing]
        except KeyError:
            encoded = self.frames[framing] = _ENCODERS[framing](self)
            return encoded

    def __repr__(self) -> str:
        return f"<Broadcast {self.namespace} {self.name} encoded={len(self.frames)}>"
