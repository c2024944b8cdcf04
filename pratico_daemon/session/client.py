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
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from pratico_daemon.rooms.broadcast import Broadcast, Framing
from pratico_daemon.session.namespace import Identity


class Conduit(Protocol):
    """The connection under a client (an Engine.IO session or a JSON WebSocket)."""

    @property
    def framing(self) -> Framing: ...

    def frame_sender(self) -> Callable[[Any], bool]:
        """The function that sends one encoded frame of `framing` (never blocks)."""
        ...

    def send_broadcast(self, broadcast: Broadcast) -> bool: ...

    def disconnect_client(self, client: SessionClient, reason: str) -> None: ...


# While attached, only the frames possibly still in flight at a drop matter for
# recovery (what the kernel had not delivered yet): the last 64 broadcasts. While
# detached, everything is kept, up to `limits.outbox_messages`.
ATTACHED_RECENT = 64


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
        "_send",
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
        self._send: Callable[[Any], bool] | None = conduit.frame_sender()
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
        # The broadcast hot path: one call per member per event, so kept flat.
        recent = self._recent
        if recent is None:
            if self.state is ClientState.GONE:
                return
            recent = self._recent = collections.deque()
        send = self._send
        if len(recent) >= (ATTACHED_RECENT if send is not None else self._recent_limit):
            self._evicted_max = recent.popleft().offset
        recent.append(broadcast)
        if send is not None:
            frame = broadcast.frames.get(self._framing)
            send(frame if frame is not None else broadcast.frame(self._framing))

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
            self._send = None

    def replay_after(self, offset: int) -> list[Broadcast] | None:
        """What was delivered after `offset`, or None if some of it was evicted."""
        if offset < self._evicted_max:
            return None
        return [b for b in (self._recent or ()) if b.offset > offset]

    def attach(self, conduit: Conduit) -> None:
        self._conduit = conduit
        self._framing = conduit.framing
        self._send = conduit.frame_sender()
        self.state = ClientState.ATTACHED

    def mark_gone(self) -> None:
        self.state = ClientState.GONE
        self._conduit = None
        self._send = None
        self._recent = None
