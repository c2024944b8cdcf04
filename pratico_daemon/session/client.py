"""`SessionClient`: one connection's presence in one namespace, and what it missed.

The client outlives its connection for a while. While ATTACHED, deliveries go
straight to the connection (a `Conduit`). When the connection drops without a
goodbye the client turns DETACHED: it stays in its rooms, and deliveries are
kept (bounded) so that a reconnect within the recovery window can replay them
(Socket.IO v4.6 connection-state recovery; `resume` for JSON clients). GONE is
final: the product has been told (`Namespace.gone`) and the gateway forgot it.

The client remembers the last `recent_limit` broadcasts it was given, sent or
not, because the last frames before a drop may never have reached the client;
it replays those whose offset is above the one the client reports, and refuses
recovery if anything after that offset was already evicted.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Mapping
from typing import Any, Protocol

from pratico_daemon.rooms.broadcast import Broadcast, Framing
from pratico_daemon.session.namespace import Identity


class Conduit(Protocol):
    """The connection under a client (an Engine.IO session or a JSON WebSocket)."""

    @property
    def framing(self) -> Framing: ...

    def send_broadcast(self, broadcast: Broadcast) -> bool: ...

    def disconnect_client(self, client: SessionClient, reason: str) -> None: ...


class ClientState(enum.Enum):
    ATTACHED = "ATTACHED"
    DETACHED = "DETACHED"
    GONE = "GONE"


class SessionClient:
    """Implements `session.namespace.Client`; created and owned by the gateway."""

    __slots__ = (
        "_conduit",
        "_evicted_max",
        "_framing",
        "_recent",
        "_recent_limit",
        "data",
        "identity",
        "namespace",
        "pid",
        "query",
        "remote",
        "sid",
        "state",
    )

    def __init__(
        self,
        *,
        sid: str,
        pid: str,
        namespace: str,
        identity: Identity,
        query: Mapping[str, str],
        remote: str,
        conduit: Conduit,
        recent_limit: int,
    ) -> None:
        self.sid = sid
        self.pid = pid
        self.namespace = namespace
        self.identity = identity
        self.query = query
        self.remote = remote
        self.data: dict[str, Any] = {}
        self.state = ClientState.ATTACHED
        self._conduit: Conduit | None = conduit
        self._framing = conduit.framing
        self._recent: collections.deque[Broadcast] | None = None  # made on first delivery
        self._recent_limit = recent_limit
        self._evicted_max = 0

    def __repr__(self) -> str:
        user = self.identity.user_id or "anonymous"
        return f"<Client {self.namespace} {self.sid} {user} {self.state.value}>"

    @property
    def member_id(self) -> str:
        return self.sid

    @property
    def framing(self) -> Framing:
        return self._conduit.framing if self._conduit is not None else self._framing

    # -- Client protocol ---------------------------------------------------------------

    def deliver(self, broadcast: Broadcast) -> None:
        if self.state is ClientState.GONE:
            return
        recent = self._recent
        if recent is None:
            recent = self._recent = collections.deque()
        if len(recent) >= self._recent_limit:
            self._evicted_max = recent.popleft().offset
        recent.append(broadcast)
        if self._conduit is not None:
            self._conduit.send_broadcast(broadcast)

    def emit(self, name: str, payload: Mapping[str, Any]) -> None:
        self.deliver(Broadcast(self.namespace, name, payload))

    def disconnect_soon(self, reason: str = "server disconnect") -> None:
        if self._conduit is not None:
            self._conduit.disconnect_client(self, reason)

    # -- gateway side ------------------------------------------------------------------

    def detach(self) -> None:
        if self.state is ClientState.ATTACHED:
            self.state = ClientState.DETACHED
            self._conduit = None

    def replay_after(self, offset: int) -> list[Broadcast] | None:
        """What was delivered after `offset`, or None if some of it was evicted."""
        if offset < self._evicted_max:
            return None
        return [b for b in (self._recent or ()) if b.offset > offset]

    def attach(self, conduit: Conduit) -> None:
        self._conduit = conduit
        self._framing = conduit.framing
        self.state = ClientState.ATTACHED

    def mark_gone(self) -> None:
        self.state = ClientState.GONE
        self._conduit = None
        self._recent = None
