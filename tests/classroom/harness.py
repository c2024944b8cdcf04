"""In-process bed for the classroom: real stores, a real RoomRegistry, test Clients.

`TestClient` implements the gateway's `Client` protocol and records what it
was sent; `Classroom` plays the gateway's part (verify the token, call
`connect`, keep the directory, answer acks as §1c says) so handler logic is
tested without sockets. Both store flavours are real: embedded (SQLite +
in-process TTL keys) and production (Redis + Postgres).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from pratico_daemon.auth import Authenticator
from pratico_daemon.classroom import create_namespace
from pratico_daemon.classroom.namespace import ClassroomNamespace
from pratico_daemon.config import Config
from pratico_daemon.errors import AppError
from pratico_daemon.rooms.broadcast import Broadcast, Framing
from pratico_daemon.rooms.registry import RoomRegistry
from pratico_daemon.services import Services
from pratico_daemon.session.namespace import Identity
from pratico_daemon.storage.aio import open_loop
from pratico_daemon.storage.embedded_keys import open_embedded_keys
from pratico_daemon.storage.redis_store import open_redis
from pratico_daemon.storage.repos import Lesson
from tests.support.pg import open_backend

_SIDS = itertools.count(1)


@attrs.define(eq=False)
class TestClient:
    """A connection as the namespace sees it; `received` is what it was sent, in order."""

    __test__ = False  # not a pytest class

    query: dict[str, str]
    identity: Identity = attrs.Factory(lambda: Identity(None))
    sid: str = attrs.Factory(lambda: f"sid{next(_SIDS)}")
    namespace: str = "/classroom"
    framing: Framing = Framing.JSON_WS
    remote: str = "127.0.0.1"
    data: dict[str, Any] = attrs.Factory(dict)
    received: list[tuple[str, Any]] = attrs.Factory(list)
    closed: str | None = None

    @property
    def member_id(self) -> str:
        return self.sid

    def deliver(self, broadcast: Broadcast) -> None:
        self.received.append((broadcast.name, dict(broadcast.payload)))

    def emit(self, name: str, payload: Mapping[str, Any]) -> None:
        self.received.append((name, dict(payload)))

    def disconnect_soon(self, reason: str = "server disconnect") -> None:
        self.closed = reason

    def events(self, name: str) -> list[Any]:
        return [payload for n, payload in self.received if n == name]


@attrs.define
class BedStores:
    """The pieces of `Stores` the classroom uses (what `open_stores` will hand over)."""

    events: Any
    presence: Any
    repos: Any
    expirations: Any
    feed: Any = None

    async def flush(self) -> None:
        await self.events.flush()


class Classroom:
    """The namespace plus the gateway's bookkeeping, driven directly by tests."""

    def __init__(self, services: Services, namespace: ClassroomNamespace, mode: str) -> None:
        self.services = services
        self.ns = namespace
        self.mode = mode

    @property
    def presence(self) -> Any:
        return self.services.stores.presence

    @property
    def repo(self) -> Any:
        return self.services.stores.repos.lessons

    def token(self, sub: str, role: str = "teacher", org: str = "org1") -> str:
        return self.services.auth.mint(sub, role, org)

    async def lesson(self, lesson_id: str = "L1", *, org: str = "org1", teacher: str = "t1",
                     seats: int = 4, status: str = "scheduled") -> Lesson:
        lesson = await self.repo.create(Lesson(id=lesson_id, org_id=org, teacher_id=teacher,
                                               title=f"lesson {lesson_id}", seat_count=seats))
        if status != "scheduled":
            await self.repo.start(lesson_id)
        if status == "ended":
            await self.repo.end(lesson_id)
        return lesson

    async def connect(self, *, role: str, sub: str | None = None, org: str | None = "org1",
                      token_role: str | None = None, manager: bool = False,
                      **query: str) -> TestClient:
        """Connect like the gateway would; raises the AppError a refusal carries."""
        q = {"role": role, **query}
        if org is not None:
            q["org_id"] = org
        if manager:
            q["product_type"] = "manager"
        claims = None
        if sub is not None:
            claims = self.services.auth.verify(self.token(sub, token_role or role, org or ""))
        client = TestClient(query=q, identity=Identity(claims))
        await self.ns.connect(client, {})
        self.ns.directory.add(client)
        return client

    async def teacher(self, sub: str = "t1", org: str = "org1") -> TestClient:
        return await self.connect(role="teacher", sub=sub, org=org)

    async def manager(self, sub: str = "m1", org: str = "org1") -> TestClient:
        return await self.connect(role="admin", sub=sub, org=org, manager=True)

    async def student(self, sub: str | None = "s1", org: str | None = "org1") -> TestClient:
        return await self.connect(role="student", sub=sub, org=org)

    async def drop(self, client: TestClient, reason: str = "transport close") -> None:
        """The connection is gone for good: disconnect, then gone (as the gateway does)."""
        await self.ns.disconnect(client, reason)
        self.ns.directory.remove(client)
        await self.ns.gone(client)

    async def emit(self, client: TestClient, event: str, payload: Any) -> dict[str, Any]:
        """Send a client event and return its ack as §1c shapes it."""
        handler = self.ns.events.get(event)
        if handler is None:
            return {"status": "ERROR", "data": {"code": "unknown_event"}}
        try:
            data = await handler(client, payload)
        except AppError as exc:
            return {"status": "ERROR", "data": exc.ack_data()}
        return {"status": "SUCCESS", "data": dict(data or {})}

    async def events_of(self, room_id: str) -> list[Any]:
        await self.services.stores.events.flush()
        return await self.services.stores.events.read(room_id, limit=1000)


def make_services(config: Config) -> Services:
    return Services(config=config, auth=Authenticator.from_config(config), node_id="bed")


@asynccontextmanager
async def open_classroom(mode: str, config: Config, tmp_path: Path, *,
                         pg_dsn: str | None = None) -> AsyncIterator[Classroom]:
    """The namespace on real stores (`embedded` or `production`), with its run() going."""
    services = make_services(config)
    async with _open_stores(mode, config, services, tmp_path, pg_dsn) as stores:
        services.stores = stores
        async with trio.open_nursery() as nursery:
            registry = RoomRegistry()
            await nursery.start(registry.run)
            services.rooms = registry
            namespace = create_namespace(services)
            await nursery.start(namespace.run)
            yield Classroom(services, namespace, mode)
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def _open_stores(mode: str, config: Config, services: Services, tmp_path: Path,
                       pg_dsn: str | None) -> AsyncIterator[BedStores]:
    if mode == "embedded":
        async with open_backend("embedded", tmp_path) as sql, \
                open_embedded_keys(config, services) as keys:
            yield BedStores(sql.events, keys.presence, sql.repos, keys.expirations, keys.feed)
    else:
        assert pg_dsn is not None
        async with open_loop(), open_backend("postgres", tmp_path, pg_dsn) as sql, \
                open_redis(config, services, health_interval_s=0.5) as redis:
            with trio.fail_after(10):
                await redis.subscription.wait_subscribed()
            yield BedStores(sql.events, redis.presence, sql.repos, redis.expirations, redis.feed)


@asynccontextmanager
async def open_peer_node(bed: Classroom) -> AsyncIterator[Classroom]:
    """A second daemon on the same stores (its own rooms and clients, no expiry watcher).

    Tests call its `on_expired` by hand next to the first node's, as two
    daemons sharing Redis would both hear one notification.
    """
    services = make_services(bed.services.config)
    services.node_id = "peer"
    services.stores = bed.services.stores
    async with trio.open_nursery() as nursery:
        registry = RoomRegistry()
        await nursery.start(registry.run)
        services.rooms = registry
        yield Classroom(services, create_namespace(services), bed.mode)
        nursery.cancel_scope.cancel()
