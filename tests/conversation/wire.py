"""Real connections to a running daemon: a plain-JSON `/ws/conversation` peer."""

from __future__ import annotations

from tests.support.json_peer import JsonPeer as BasePeer


class JsonPeer(BasePeer):
    namespace = "conversation"
