"""In-process Pratico rig: the real namespace, room registry and stores, no sockets.

`rig` builds what the daemon would hand the product — `Services` with a running
`RoomRegistry`, real stores (embedded SQLite by default, PostgreSQL where a
test asks for it), a checkpointer — and `TestClient`s stand in for
connections: they record what the room delivers to them, exactly what the
gateway would have framed and sent.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from pratico_daemon.auth import Authenticator
from pratico_daemon.errors import AppError
from pratico_daemon.metrics import Metrics
from pratico_daemon.pratico import create_namespace
from pratico_daemon.pratico.live import PraticoNamespace
from pratico_daemon.rooms.broadcast import Broadcast, Framing
from pratico_daemon.rooms.registry import RoomRegistry
from pratico_daemon.services import Services
from pratico_daemon.session.namespace import Identity
from pratico_daemon.storage.aio import open_loop
from pratico_daemon.storage.checkpointer import Checkpointer
from pratico_daemon.storage.embedded_checkpoints import open_embedded_checkpoints
from pratico_daemon.storage.stores import Stores
from tests.conftest import make_config
from tests.support.pg import create_test_database, drop_test_database, dsn_for, open_backend


class TestClient:
    """A connection's presence in `/pratico`, recording what it was sent."""

    __test__ = False
    framing = Framing.JSON_WS
    namespace = "/pratico"
    remote = "127.0.0.1"

    def __init__(self, sid: str, claims: Any = None) -> None:
        self.sid = self.member_id = sid
        self.identity = Identity(claims)
        self.query: dict[str, str] = {}
        self.data: dict[str, Any] = {}
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.closed: str | None = None

    def deliver(self, broadcast: Broadcast) -> None:
        self.sent.append((broadcast.name, dict(broadcast.payload)))

    def emit(self, name: str, payload: Any) -> None:
        self.sent.append((name, dict(payload)))

    def disconnect_soon(self, reason: str = "server disconnect") -> None:
        self.closed = reason

    def named(self, name: str) -> list[dict[str, Any]]:
        return [payload for event, payload in self.sent if event == name]


@attrs.define
class Rig:
    services: Services
    ns: PraticoNamespace
    backend: Any
    checkpointer: Checkpointer
    nursery: trio.Nursery
    _n: int = 0

    def claims(self, sub: str, role: str = "teacher", org: str = "org1") -> Any:
        return self.services.auth.verify(self.services.auth.mint(sub, role, org))

    def client(self, sub: str | None = None, role: str = "teacher", org: str = "org1"
               ) -> TestClient:
        self._n += 1
        return TestClient(f"sid{self._n}", self.claims(sub, role, org) if sub else None)

    async def call(self, client: TestClient, event: str, payload: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
        """What the gateway does for an event with an ack: the SUCCESS data, or AppError."""
        result = await self.ns.events[event](client, payload if payload is not None else {})
        return dict(result or {})

    async def error(self, client: TestClient, event: str, payload: dict[str, Any] | None = None
                    ) -> AppError:
        try:
            await self.call(client, event, payload)
        except AppError as exc:
            return exc
        raise AssertionError(f"{event} succeeded")

    async def launch(self, trainer_sub: str = "trainer1", title: str = "Algèbre linéaire",
                     **params: Any) -> Any:
        return await self.ns.create_room(
            claims=self.claims(trainer_sub), capsule_id="cap1", title=title,
            capsule_snapshot={"document": {"pages": 3}}, params=params)

    async def events(self, room_id: str) -> list[Any]:
        return await self.services.stores.events.read(room_id, limit=10000)


@attrs.define
class RigStores(Stores):
    """`Stores` plus the checkpointer, where the product looks for it."""

    checkpointer: Any = None


@asynccontextmanager
async def open_rig(tmp_path: Path, kind: str = "embedded", now: Any = time.time,
                   database: str | None = None, own_loop: bool = True,
                   pg_port: int | None = None, **sections: Any) -> AsyncIterator[Rig]:
    """The rig; on PostgreSQL a fresh database, or `database` (kept) when given."""
    config = make_config(tmp_path / "state", **sections)
    services = Services(config=config, auth=Authenticator.from_config(config))
    owned = kind == "postgres" and database is None
    db = await create_test_database() if owned else database
    try:
        async with open_loop() if kind == "postgres" and own_loop else _nothing(), \
                open_backend(kind, tmp_path, _dsn(db, pg_port) if db else None,
                             services=services) as backend, \
                open_embedded_checkpoints(config, services) as cps, \
                trio.open_nursery() as nursery:
            checkpointer = Checkpointer(cps.checkpoints, services.metrics,
                                        interval_s=config.redis.checkpoint_interval_s)
            services.stores = RigStores(events=backend.events, checkpoints=cps.checkpoints,
                                        presence=None, repos=backend.repos,
                                        checkpointer=checkpointer)
            await nursery.start(checkpointer.run)
            services.rooms = await nursery.start(RoomRegistry(Metrics()).run)
            ns = create_namespace(services)
            ns.now = now
            await nursery.start(ns.run)
            yield Rig(services, ns, backend, checkpointer, nursery)
            nursery.cancel_scope.cancel()
    finally:
        if owned and db is not None:
            with trio.CancelScope(shield=True):
                await drop_test_database(db)


def _dsn(database: str, port: int | None) -> str:
    """The test database's DSN, or the same database through a proxy on `port`."""
    return dsn_for(database) if port is None else \
        f"postgresql://postgres@127.0.0.1:{port}/{database}"


@asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield None


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with open_rig(tmp_path) as r:
        yield r


def trio_wall_clock() -> Any:
    """A wall clock that follows trio's clock (so autojump moves deadlines too)."""
    base = time.time() - trio.current_time()
    return lambda: base + trio.current_time()
