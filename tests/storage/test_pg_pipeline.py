"""Two batches in flight: the second commits only after the first, never after its failure."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import trio

from pratico_daemon.storage.event_writer import Pending, encode_data, row_of
from pratico_daemon.storage.pg_events import (
    _copy_direct,
    _EarlierBatchFailed,
    _write_in_order,
    open_pg_events,
)
from pratico_daemon.storage.postgres import Postgres
from pratico_daemon.storage.protocols import RoomEvent
from tests.storage.test_pg_outage import count_rows


class _Batch:
    """Rows of a few events, as the writer hands them to the store."""

    def __init__(self, room: str, n: int) -> None:
        events = [RoomEvent(room, "quiz_answered", {"i": i}) for i in range(n)]
        self.rows = [row_of(Pending(e, encode_data(e), 0.0, trio.lowlevel.current_task()))
                     for e in events]


async def _rows_of(pg: Postgres, room: str) -> int:
    async def count(conn: object) -> int:
        return int(await conn.fetchval(  # type: ignore[attr-defined]
            "SELECT count(*) FROM room_events WHERE room_id = $1", room))

    return await pg.run(count)


async def test_the_next_batch_inserts_at_once_and_commits_after_the_one_before(
    aio_loop: object, pg_dsn: str
) -> None:
    pg = await Postgres.open(pg_dsn, max_size=4)
    try:
        before: asyncio.Future[bool] = pg.loop.create_future()
        mine: asyncio.Future[bool] = pg.loop.create_future()
        second = _Batch("pipeline-a", 5)
        done = trio.Event()

        async def write() -> None:
            await pg.run(_write_in_order, _copy_direct, second.rows, before, mine)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            await trio.sleep(0.3)  # inserted by now, and waiting for the batch before
            assert not done.is_set()
            assert await _rows_of(pg, "pipeline-a") == 0  # not visible before its turn
            before.set_result(True)  # the batch before committed
            with trio.fail_after(5):
                await done.wait()
        assert mine.result() is True
        assert await _rows_of(pg, "pipeline-a") == 5
    finally:
        await pg.close()


async def test_a_batch_never_commits_after_the_one_before_failed(
    aio_loop: object, pg_dsn: str
) -> None:
    pg = await Postgres.open(pg_dsn, max_size=4)
    try:
        for already_known in (False, True):
            before: asyncio.Future[bool] = pg.loop.create_future()
            mine: asyncio.Future[bool] = pg.loop.create_future()
            batch = _Batch(f"pipeline-b{already_known}", 5)
            if already_known:
                before.set_result(False)
            else:
                pg.loop.call_later(0.2, before.set_result, False)
            with pytest.raises(_EarlierBatchFailed):
                await pg.run(_write_in_order, _copy_direct, batch.rows, before, mine)
            assert not mine.done()  # the store decides where it goes next
            assert await _rows_of(pg, f"pipeline-b{already_known}") == 0
    finally:
        await pg.close()


async def test_a_burst_through_the_pipelined_store_lands_once_and_in_order(
    aio_loop: object, pg_dsn: str, tmp_path: Path
) -> None:
    """Thousands of appenders at once: several batches in flight, every event once."""
    pg = await Postgres.open(pg_dsn, max_size=4)
    acked: list[RoomEvent] = []
    try:
        async with open_pg_events(pg, tmp_path) as store:
            async def appender(i: int) -> None:
                for n in range(5):
                    event = RoomEvent("pipeline-burst", "quiz_answered", {"i": i, "n": n})
                    await store.append_durable(event)
                    acked.append(event)

            async with trio.open_nursery() as nursery:
                for i in range(2000):
                    nursery.start_soon(appender, i)
            assert store.writer.batches >= 6  # several batches, so several in flight
            stored = await store.read("pipeline-burst", limit=10_000)
        assert len(acked) == 10_000
        assert {e.id for e in stored} == {e.id for e in acked}
        assert [e.id for e in stored] == sorted(e.id for e in stored)
        total, distinct = await count_rows(pg_dsn)
        assert total == distinct
    finally:
        await pg.close()
