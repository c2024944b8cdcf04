"""`open_stores` in the daemon: Postgres migrated at start, embedded otherwise, and a
daemon that starts while Postgres is down (journaling) and catches up when it answers."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import trio

from pratico_daemon.auth import Authenticator
from pratico_daemon.services import Services
from pratico_daemon.storage.protocols import RoomEvent
from pratico_daemon.storage.repos import Lesson
from pratico_daemon.storage.stores import open_stores
from tests.conftest import make_config, start_daemon
from tests.support.http import get
from tests.support.pg import dsn_for
from tests.support.tcp_proxy import TcpProxy


async def test_daemon_migrates_and_writes_events_to_postgres(
    empty_pg_dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    config = make_config(tmp_path / "state", postgres={"dsn": empty_pg_dsn})
    running = await start_daemon(nursery, config)
    stores = running.daemon.services.stores
    ready = (await get(f"{running.url}/readyz")).json()
    assert ready["checks"]["postgres"] == {"ok": True}
    await stores.repos.lessons.create(Lesson("L1", "org1", "t1", "Maths", 20))
    event = RoomEvent("L1", "lesson_joined", {"seat": 1}, user_id="s1")
    await stores.events.append_durable(event)
    assert await stores.events.read("L1") == [event]
    assert stores.pg is not None
    running.daemon.request_shutdown()


async def test_embedded_stores_use_one_sqlite_file(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state")
    services = Services(config=config, auth=Authenticator.from_config(config))
    async with open_stores(services) as stores:
        await stores.events.append_durable(RoomEvent("r", "session_started"))
        assert [e.type for e in await stores.events.read("r")] == ["session_started"]
        await stores.repos.lessons.create(Lesson("L1", "org1", "t1"))
        assert stores.pg is None
        assert stores.expirations is not None
    assert services.health.checks["storage"].ok
    assert (tmp_path / "state" / "pratico.sqlite").exists()


async def test_daemon_starts_without_postgres_and_catches_up(
    empty_pg_dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    port = await nursery.start(proxy.run)
    proxy.cut()
    database = urlsplit(empty_pg_dsn).path
    config = make_config(tmp_path / "state",
                         postgres={"dsn": f"postgresql://postgres@127.0.0.1:{port}{database}"})
    running = await start_daemon(nursery, config)
    stores = running.daemon.services.stores
    ready = (await get(f"{running.url}/readyz")).json()
    assert ready["checks"]["postgres"]["ok"] is False
    events = [RoomEvent("room", "answer", {"n": n}) for n in range(50)]
    async with trio.open_nursery() as appenders:  # acknowledged from the journal
        for event in events:
            appenders.start_soon(stores.events.append_durable, event)
    assert stores.events.journal.depth == 50
    proxy.restore()
    with trio.fail_after(20):
        await stores.events.wait_direct()  # migrated, then replayed
    assert [e.data["n"] for e in await stores.events.read("room")] == list(range(50))
    ready = (await get(f"{running.url}/readyz")).json()
    assert ready["checks"]["postgres"] == {"ok": True}
    assert dsn_for(database.strip("/")) == empty_pg_dsn
    running.daemon.request_shutdown()
