"""Postgres goes away mid-stream: every event is acknowledged, none lost, none doubled."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import asyncpg
import trio

from pratico_daemon.health import Health
from pratico_daemon.metrics import Metrics
from pratico_daemon.storage.aio import aio_as_trio
from pratico_daemon.storage.journal import Journal
from pratico_daemon.storage.pg_events import PgEventStore, open_pg_events
from pratico_daemon.storage.postgres import Postgres
from pratico_daemon.storage.protocols import RoomEvent, StorageUnavailable
from tests.support.tcp_proxy import TcpProxy

TOTAL = 10_000


def through(proxy_port: int, dsn: str) -> str:
    database = urlsplit(dsn).path
    return f"postgresql://postgres@127.0.0.1:{proxy_port}{database}"


async def count_rows(dsn: str) -> tuple[int, int]:
    async def go() -> tuple[int, int]:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow("SELECT count(*), count(DISTINCT id) FROM room_events")
            return int(row[0]), int(row[1])
        finally:
            await conn.close()

    return await aio_as_trio(go)()


def gauge(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    assert value is not None
    return value


async def test_cut_mid_stream_loses_nothing_and_doubles_nothing(
    aio_loop: object, pg_dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    port = await nursery.start(proxy.run)
    svc = SimpleNamespace(health=Health(), metrics=Metrics())
    pg = await Postgres.open(through(port, pg_dsn), max_size=4)
    acked: list[RoomEvent] = []
    seen_outage = {"health": False, "max_depth": 0}
    cut_done = trio.Event()

    async def append(event: RoomEvent) -> None:
        await store.append_durable(event)
        acked.append(event)
        if len(acked) == 2_000:
            proxy.cut()  # mid-stream: the next batches are in flight right now
            cut_done.set()

    async with open_pg_events(pg, tmp_path, services=svc, max_batch=250,
                              retry_initial_s=0.02, retry_max_s=0.2) as store:
        events = [RoomEvent(f"room-{n % 40}", "quiz_answered", {"n": n}) for n in range(TOTAL)]
        async with trio.open_nursery() as appenders:
            for event in events[: TOTAL // 2]:
                appenders.start_soon(append, event)
            await cut_done.wait()
            with trio.fail_after(20):
                while len(acked) < TOTAL // 2:  # acknowledged from the journal
                    seen_outage["max_depth"] = max(seen_outage["max_depth"], store.journal.depth)
                    await trio.sleep(0.01)
            seen_outage["health"] = not svc.health.checks["postgres"].ok
            assert gauge(svc.metrics, "pratico_store_up", store="postgres") == 0
            await trio.sleep(0.3)  # the recovery task retries against a dead route
            proxy.restore()
            # The second half arrives while the journal is being replayed.
            for event in events[TOTAL // 2:]:
                appenders.start_soon(append, event)
        with trio.fail_after(30):
            await store.wait_direct()
        await store.flush()

    await pg.close()
    assert len(acked) == TOTAL
    assert seen_outage["health"] is True
    assert seen_outage["max_depth"] > 0
    assert svc.health.checks["postgres"].ok
    assert gauge(svc.metrics, "pratico_journal_events") == 0
    assert await count_rows(pg_dsn) == (TOTAL, TOTAL)


async def test_journal_left_by_a_crash_is_replayed_at_start(
    aio_loop: object, pg_dsn: str, tmp_path: Path
) -> None:
    # A previous run journaled events and died before Postgres came back.
    journal = await Journal.open(tmp_path / "event-journal.sqlite")
    old = [RoomEvent("r", "answer", {"n": n}) for n in range(300)]
    await journal.append([(e.id, e.created_at, e.room_id, e.user_id, e.type, '{"n": 0}')
                          for e in old])
    await journal.close()
    pg = await Postgres.open(pg_dsn)
    async with open_pg_events(pg, tmp_path) as store:
        assert store.journal.depth == 300
        await store.append_durable(RoomEvent("r", "new"))  # queued behind the journal
        with trio.fail_after(10):
            await store.wait_direct()
        events = await store.read("r", limit=1000)
        assert store.journal.depth == 0
    await pg.close()
    assert len(events) == 301
    assert {e.id for e in events} == {e.id for e in old} | {events[-1].id}


async def test_no_database_and_no_journal_is_unavailable(
    aio_loop: object, tmp_path: Path, nursery: trio.Nursery
) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    port = await nursery.start(proxy.run)
    proxy.cut()
    pg = await Postgres.open(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    journal = await Journal.open(tmp_path / "j.sqlite")
    await journal.close()  # a journal whose file can no longer be written
    store = PgEventStore(pg, journal)
    async with trio.open_nursery() as tasks:
        await tasks.start(store.writer.run)
        try:
            await store.append_durable(RoomEvent("r", "lost"))
        except StorageUnavailable as exc:
            error = exc
        tasks.cancel_scope.cancel()
    await pg.close()
    assert "journal" in str(error)


async def test_two_outages_in_a_row(
    aio_loop: object, pg_dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    port = await nursery.start(proxy.run)
    pg = await Postgres.open(through(port, pg_dsn), max_size=2)
    written: list[RoomEvent] = []
    async with open_pg_events(pg, tmp_path, retry_initial_s=0.02, retry_max_s=0.1) as store:
        for _ in range(2):
            proxy.cut()
            batch = [RoomEvent("r", "e", {"n": len(written) + n}) for n in range(200)]
            async with trio.open_nursery() as appenders:
                for event in batch:
                    appenders.start_soon(store.append_durable, event)
            written += batch
            assert not store.direct
            proxy.restore()
            with trio.fail_after(20):
                await store.wait_direct()
    await pg.close()
    assert await count_rows(pg_dsn) == (400, 400)
