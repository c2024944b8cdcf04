"""In-process test bed for conversation sessions: the service, its REST, test clients.

`FakeClient` is a plain implementation of the namespace's `Client` protocol
that records what it was sent. `bed(...)` runs a RoomRegistry, the
ConversationService (scheduler, outbox relay, user.events consumer) and the
quart app in-process, on the embedded SQLite store or on real PostgreSQL +
Redis, with a `WallClock` pinned to `ORIGIN` so a MockClock drives the
slot's 30 minutes.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import attrs
import orjson
import trio
import trio.lowlevel

from pratico_daemon.auth import Authenticator, Claims
from pratico_daemon.conversation import create_namespace
from pratico_daemon.conversation.backend import open_embedded
from pratico_daemon.conversation.bus import RedisBus
from pratico_daemon.conversation.clock import WallClock
from pratico_daemon.conversation.db import PgDatabase
from pratico_daemon.conversation.namespace import ConversationNamespace
from pratico_daemon.conversation.repo import ConversationRepo
from pratico_daemon.conversation.service import ConversationService
from pratico_daemon.http.app import create_app
from pratico_daemon.rooms.broadcast import Broadcast, Framing
from pratico_daemon.rooms.registry import RoomRegistry
from pratico_daemon.services import Services
from pratico_daemon.session.namespace import Identity
from pratico_daemon.storage import migrate
from pratico_daemon.storage.aio import aio_as_trio, open_loop
from pratico_daemon.storage.postgres import Postgres
from tests.conftest import make_config

ORIGIN = dt.datetime(2030, 1, 7, 9, 0, tzinfo=dt.UTC)  # a Monday, 09:00 UTC
PG_URL = os.environ.get("PRATICO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("PRATICO_TEST_REDIS", "redis://127.0.0.1:6379/0")
_sids = itertools.count(1)


def at(minutes: float) -> str:
    """ISO time `minutes` after ORIGIN."""
    return (ORIGIN + dt.timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


class FakeClient:
    """A connection in the /conversation namespace that remembers what it received."""

    namespace = "/conversation"
    framing = Framing.JSON_WS

    def __init__(self, user_id: str, role: str = "student") -> None:
        self.sid = f"sid{next(_sids)}-{user_id}"
        self.member_id = self.sid
        self.identity = Identity(Claims(sub=user_id, org_id="org1", role=role, raw={}))
        self.query: dict[str, str] = {}
        self.remote = "127.0.0.1"
        self.data: dict[str, Any] = {}
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.closed: str | None = None

    def __repr__(self) -> str:
        return f"<FakeClient {self.sid} {len(self.received)} received>"

    def deliver(self, broadcast: Broadcast) -> None:
        self.received.append((broadcast.name, dict(broadcast.payload)))

    def emit(self, name: str, payload: Any) -> None:
        self.received.append((name, dict(payload)))

    def disconnect_soon(self, reason: str = "server disconnect") -> None:
        self.closed = reason

    def of(self, name: str) -> list[dict[str, Any]]:
        return [p for n, p in self.received if n == name]

    def names(self) -> list[str]:
        return [n for n, _ in self.received]


@attrs.define
class Bed:
    services: Services
    service: ConversationService
    namespace: ConversationNamespace
    app: Any
    auth: Authenticator

    @property
    def repo(self) -> ConversationRepo:
        assert self.service.repo is not None
        return self.service.repo

    @property
    def bus(self) -> Any:
        return self.service.bus

    def token(self, user: str, role: str = "student") -> str:
        return self.auth.mint(user, role, "org1", 3600)

    async def rest(self, method: str, path: str, user: str = "admin", *,
                   role: str | None = None, json: Any = None,
                   raw: bytes | None = None) -> tuple[int, Any]:
        role = role or ("admin" if user == "admin" else "student")
        client = self.app.test_client()
        headers = {"Authorization": f"Bearer {self.token(user, role)}"}
        if json is not None:
            raw = orjson.dumps(json)
            headers["Content-Type"] = "application/json"
        response = await client.open(path, method=method, data=raw, headers=headers)
        body = await response.get_data()
        return response.status_code, orjson.loads(body) if body else None

    async def connect(self, user: str) -> FakeClient:
        client = FakeClient(user)
        self.namespace.directory.add(client)
        await self.namespace.connect(client, {})
        await settle()
        return client

    async def gone(self, client: FakeClient) -> None:
        self.namespace.directory.remove(client)
        await self.namespace.gone(client)
        await settle()

    async def signal(self, client: FakeClient, name: str, payload: dict[str, Any]) -> Any:
        result = await self.namespace.events[name](client, payload)
        await settle()
        return result

    async def published(self, topic: str = "conversation.events") -> list[dict[str, Any]]:
        """The topic's entries once the relay has published everything pending."""
        assert self.service.relay is not None
        while await self.service.relay.publish_pending():
            pass
        return await self.bus.entries(topic)

    async def published_types(self, topic: str = "conversation.events") -> list[str]:
        return [e["type"] for e in await self.published(topic)]


async def settle() -> None:
    """Let room loops and the scheduler run what is queued (no clock advance needed)."""
    for _ in range(20):
        await trio.lowlevel.checkpoint()


async def sleep_until(minutes: float, clock: WallClock) -> None:
    target = ORIGIN + dt.timedelta(minutes=minutes)
    await trio.sleep(max(0.0, (target - clock.now()).total_seconds()))
    await settle()


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh, migrated database on the real PostgreSQL (dropped afterwards)."""
    name = f"pratico_conv_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str, migrate_db: str | None = None) -> None:
        # No trio deadline here: under a MockClock a deadline would "expire"
        # while PostgreSQL works; these statements are bounded by the test timeout.
        async with open_loop():
            async def go() -> None:
                conn = await asyncpg.connect(f"{PG_URL}/postgres")
                try:
                    await conn.execute(sql)
                finally:
                    await conn.close()
                if migrate_db is not None:
                    conn = await asyncpg.connect(f"{PG_URL}/{migrate_db}")
                    try:
                        await migrate.apply_on(conn)
                    finally:
                        await conn.close()

            await aio_as_trio(go)()

    await admin(f'CREATE DATABASE "{name}"', migrate_db=name)
    try:
        yield f"{PG_URL}/{name}"
    finally:
        with trio.CancelScope(shield=True):
            await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def backend(kind: str, state_dir: Path, dsn: str | None = None,
                  prefix: str | None = None, *,
                  drop_keys: bool = True) -> AsyncIterator[tuple[ConversationRepo, Any]]:
    """(repo, bus): "embedded" (SQLite, inline) or "production" (PostgreSQL + Redis).

    Opening it again on the same state_dir (or dsn and prefix) is a restart.
    """
    if kind == "embedded":
        repo, bus = open_embedded(state_dir, threaded=False)
        try:
            yield repo, bus
        finally:
            repo.db.close()  # type: ignore[attr-defined]
        return
    assert dsn is not None
    assert prefix is not None
    async with open_loop():
        pg = await Postgres.open(dsn, min_size=0, max_size=4)
        bus = await RedisBus.open(REDIS_URL, prefix)
        try:
            yield ConversationRepo(PgDatabase(pg)), bus
        finally:
            with trio.CancelScope(shield=True):
                if drop_keys:
                    await bus.loop.run_aio_coroutine(_drop_prefix(bus.client, prefix))
                await bus.aclose()
                await pg.close()


async def _drop_prefix(client: Any, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)


@asynccontextmanager
async def bed(repo: ConversationRepo, bus: Any, state_dir: Path, *,
              user_events_poll_s: float = 3600.0, clock: WallClock | None = None,
              **conversation: Any) -> AsyncIterator[Bed]:
    """The service running on (repo, bus), with REST, until the block exits.

    Pass the same `clock` to consecutive beds to keep one timeline across a restart.
    """
    config = make_config(state_dir, conversation=conversation)
    auth = Authenticator.from_config(config)
    services = Services(config=config, auth=auth, node_id="test-node")
    async with trio.open_nursery() as nursery:
        registry = await nursery.start(RoomRegistry().run)
        services.rooms = registry
        from pratico_daemon.session.directory import ClientDirectory

        service = ConversationService(config, registry, ClientDirectory(),
                                      clock=clock or WallClock(ORIGIN), node_id="test-node",
                                      user_events_poll_s=user_events_poll_s, relay_idle_s=3600)
        namespace = create_namespace(services, service=service)
        service.attach_backend(repo, bus)
        await nursery.start(service.run)
        app = create_app(services)
        yield Bed(services, service, namespace, app, auth)
        nursery.cancel_scope.cancel()


async def make_slot(b: Bed, start: float = 20, **changes: Any) -> str:
    body = {"targetLanguageCode": "en", "level": "B1", "startTime": at(start),
            "durationMinutes": 30, "minParticipants": 2, "maxParticipants": 8, **changes}
    status, slot = await b.rest("POST", "/timeslots", json=body)
    assert status == 201, slot
    return str(slot["id"])


async def register(b: Bed, slot_id: str, *users: str) -> None:
    for user in users:
        status, body = await b.rest("POST", f"/timeslots/{slot_id}/register", user)
        assert status == 200, body


async def join(b: Bed, slot_id: str, user: str) -> dict[str, Any]:
    status, body = await b.rest("POST", "/sessions/join", user, json={"timeSlotId": slot_id})
    assert status == 200, body
    return dict(body)
