"""Migrations: applied in order, once, recorded; two daemons migrating at once do not clash."""

from __future__ import annotations

import asyncpg
import trio

from pratico_daemon.config import from_mapping
from pratico_daemon.storage import migrate
from pratico_daemon.storage.aio import aio_as_trio, open_loop

EXPECTED_TABLES = {
    "lessons", "student_attend", "quizzes", "tasks", "rooms", "chats", "chat_messages",
    "room_events", "timeslots", "registrations", "sessions", "participants", "outbox",
    "schema_migrations",
}


async def fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()

    async with open_loop():
        return await aio_as_trio(go)()


async def test_migrations_apply_once_and_are_recorded(empty_pg_dsn: str) -> None:
    config = from_mapping({"postgres": {"dsn": empty_pg_dsn}}, environ={})
    shipped = migrate.migrations()
    assert [v for v, _, _ in shipped] == sorted(v for v, _, _ in shipped)
    assert await migrate.run(config) == len(shipped)
    assert await migrate.run(config) == 0
    rows = await fetch(empty_pg_dsn, "SELECT version, name FROM schema_migrations ORDER BY 1")
    assert [(r["version"], r["name"]) for r in rows] == [(v, n) for v, n, _ in shipped]
    tables = {r["tablename"] for r in await fetch(
        empty_pg_dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables >= EXPECTED_TABLES


async def test_two_daemons_migrating_at_once(empty_pg_dsn: str) -> None:
    config = from_mapping({"postgres": {"dsn": empty_pg_dsn}}, environ={})
    counts: list[int] = []

    async def one() -> None:
        counts.append(await migrate.run(config))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(one)
    assert sorted(counts) == [0, 0, len(migrate.migrations())]


async def test_no_dsn_means_nothing_to_migrate() -> None:
    assert await migrate.run(from_mapping({}, environ={})) == 0


async def test_room_events_have_the_paging_index(pg_dsn: str) -> None:
    rows = await fetch(pg_dsn, "SELECT indexdef FROM pg_indexes WHERE tablename = 'room_events'")
    assert any("(room_id, created_at, id)" in r["indexdef"] for r in rows)
