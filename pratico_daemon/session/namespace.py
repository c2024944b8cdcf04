"""The contract between the gateway and the products: namespaces, clients, handlers.

A product (classroom, pratico, conversation) is a `Namespace`: it decides who
may connect (`connect`), answers client events (`events`: name → handler) and
cleans up (`disconnect`). The gateway does everything else — framings,
Engine.IO, acks, rate limits, recovery — and handlers never know whether an
event came over Socket.IO or plain JSON (PROTOCOL.md §1).

A handler is `async def handler(client, payload) -> dict | None`: the returned
dict is the SUCCESS `data` of the ack (None → `{}`); raising
`AppError(code, …)` answers ERROR with that code. An event sent without an ack
runs the same handler; its result is dropped (an error is logged).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import attrs
import trio

from pratico_daemon.auth import Claims
from pratico_daemon.rooms.broadcast import Broadcast, Framing


@attrs.frozen
class Identity:
    """Who is on the other end, as established at connect.

    `claims` is None for an anonymous connection (a guest without a token).
    Products may bind a further identity later (a guest token, an
    `access_token` in `join_lesson`) in `Client.data`.
    """

    claims: Claims | None

    @property
    def user_id(self) -> str | None:
        return self.claims.sub if self.claims else None

    @property
    def org_id(self) -> str | None:
        return self.claims.org_id if self.claims else None

    @property
    def role(self) -> str | None:
        return self.claims.role if self.claims else None


class Client(Protocol):
    """One connection's presence in one namespace (a Socket.IO socket, or a JSON connection).

    It is a room `Member` (member_id = sid), so it can join rooms directly.
    """

    sid: str
    namespace: str
    identity: Identity
    query: Mapping[str, str]
    remote: str
    data: dict[str, Any]
    """Handler-owned per-connection state (e.g. the lesson joined, the participant id)."""

    @property
    def member_id(self) -> str:
        """The room-member id: the sid."""
        ...

    @property
    def framing(self) -> Framing:
        """The framing of the connection (it changes when polling upgrades)."""
        ...

    def deliver(self, broadcast: Broadcast) -> None:
        """Queue a pre-encoded broadcast; never blocks (slow consumers are cut off)."""
        ...

    def emit(self, name: str, payload: Mapping[str, Any]) -> None:
        """Send one server event to this client only; never blocks."""
        ...

    def disconnect_soon(self, reason: str = "server disconnect") -> None:
        """Close this client's namespace connection after what is queued is sent."""
        ...


Handler = Callable[[Client, dict[str, Any]], Awaitable[Mapping[str, Any] | None]]


class Namespace:
    """Base class for products. Subclasses set `name` and fill `events`.

    A namespace receives the daemon's `Services` (config, auth, stores, rooms
    registry, metrics) and a `ClientDirectory` the gateway keeps current (every
    connected client of this namespace, by sid and by user id) so a product can
    reach "this user, wherever connected". Long-running work (a presence
    watcher, a scheduler) goes in `run`, which the daemon starts in its nursery.
    """

    name: str = "/"
    events: dict[str, Handler]

    def __init__(self, services: Any) -> None:
        from pratico_daemon.session.directory import ClientDirectory

        self.services = services
        self.events = {}
        self.directory = ClientDirectory()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Background work of the product; the default has none."""
        task_status.started()

    def on(self, event: str) -> Callable[[Handler], Handler]:
        """Decorator registering a handler for a client event."""

        def register(handler: Handler) -> Handler:
            self.events[event] = handler
            return handler

        return register

    async def connect(self, client: Client, auth: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Accept (return extra CONNECT data, or None) or refuse (raise AppError).

        `auth` is the Socket.IO CONNECT payload (or {} for JSON, whose token is in
        the query); the gateway has already verified any token into
        `client.identity` and refused bad ones (a bad token is never downgraded
        to anonymous).
        """
        return None

    async def disconnect(self, client: Client, reason: str) -> None:
        """The client's connection is gone: update presence (e.g. `connected: false`).

        This is NOT the end of the client. If the drop was unexpected, the gateway
        keeps the client for `engineio.recovery_window_s` (Socket.IO connection-state
        recovery, or a JSON `resume`): it stays a member of the rooms it was in, and
        what is broadcast meanwhile is buffered for it. Then exactly one of
        `reconnected` (it came back) or `gone` (it will not) follows. An explicit
        disconnect (client-side close, kick, logout, drain) is followed by `gone` at once.
        """
        return None

    async def reconnected(self, client: Client) -> None:
        """The client came back within the recovery window; missed events were replayed."""
        return None

    async def gone(self, client: Client) -> None:
        """The client will not come back: remove it from rooms, forget per-client state."""
        return None
