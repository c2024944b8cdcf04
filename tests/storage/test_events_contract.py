"""EventStore contract: the same behaviour on Postgres and on the embedded SQLite file."""

from __future__ import annotations

import datetime as dt

import pytest
import trio
import trio.lowlevel

from pratico_daemon.storage.protocols import InvalidData, RoomEvent
from tests.support.pg import SqlBackend


def at(seconds: float) -> dt.datetime:
    return dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)


async def test_append_then_read_round_trips(sql_backend: SqlBackend) -> None:
    event = RoomEvent("room-1", "quiz_answered", {"choice": 2, "name": "Zoé", "ok": True},
                      user_id="trainer-1")
    await sql_backend.events.append_durable(event)
    [back] = await sql_backend.events.read("room-1")
    assert back == event
    assert await sql_backend.events.read("room-2") == []


async def test_read_pages_in_time_order(sql_backend: SqlBackend) -> None:
    events = [RoomEvent("r", "tick", {"n": n}, created_at=at(n)) for n in range(25)]
    for e in reversed(events):  # arrival order must not matter, time order does
        await sql_backend.events.append_durable(e)
    pages, after = [], None
    while True:
        page = await sql_backend.events.read("r", after=after, limit=10)
        if not page:
            break
        pages.append(page)
        after = page[-1].id
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [e.data["n"] for p in pages for e in p] == list(range(25))


async def test_concurrent_appends_share_commits(sql_backend: SqlBackend) -> None:
    writer = sql_backend.events.writer
    before = writer.batches
    async with trio.open_nursery() as nursery:
        for n in range(500):
            nursery.start_soon(sql_backend.events.append_durable, RoomEvent("r", "e", {"n": n}))
    assert len(await sql_backend.events.read("r", limit=1000)) == 500
    assert writer.batches - before < 100  # group commit: far fewer commits than events


async def test_append_is_idempotent_by_id(sql_backend: SqlBackend) -> None:
    event = RoomEvent("r", "session_started")
    await sql_backend.events.append_durable(event)
    await sql_backend.events.append_durable(event)
    assert await sql_backend.events.read("r") == [event]


async def test_a_batch_mixing_repeated_and_new_events_stores_each_once(
    sql_backend: SqlBackend,
) -> None:
    # Postgres writes a batch by COPY, which cannot skip a stored id: such a
    # batch must be written again the idempotent way, new events included.
    first = [RoomEvent("r", "page_changed", {"n": n}) for n in range(20)]
    for event in first[:5]:
        await sql_backend.events.append_durable(event)
    async with trio.open_nursery() as nursery:
        for event in first:  # 5 already stored, 15 new, all in one or few batches
            nursery.start_soon(sql_backend.events.append_durable, event)
    stored = await sql_backend.events.read("r")
    assert sorted(e.id for e in stored) == sorted(e.id for e in first)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"blob": "x" * (1024 * 1024 + 1)}, "limit"),
        ({"when": {1, 2}}, "not JSON"),
        ({"text": "a\0b"}, "NUL"),
        (["not", "an", "object"], "JSON object"),
    ],
    ids=["oversized", "not-json", "nul", "not-object"],
)
async def test_bad_data_is_refused_before_queueing(
    sql_backend: SqlBackend, data: object, reason: str
) -> None:
    with pytest.raises(InvalidData, match=reason):
        await sql_backend.events.append_durable(RoomEvent("r", "bad", data))  # type: ignore[arg-type]
    await sql_backend.events.append_durable(RoomEvent("r", "good"))
    assert [e.type for e in await sql_backend.events.read("r")] == ["good"]


async def test_bad_identifiers_are_refused(sql_backend: SqlBackend) -> None:
    with pytest.raises(InvalidData, match="room_id"):
        await sql_backend.events.append_durable(RoomEvent("", "t"))
    with pytest.raises(InvalidData, match="type"):
        await sql_backend.events.append_durable(RoomEvent("r", "x\0y"))


async def test_cancelled_append_gets_no_ack_and_writer_keeps_working(
    sql_backend: SqlBackend,
) -> None:
    acked = []

    async def append(n: int) -> None:
        await sql_backend.events.append_durable(RoomEvent("r", "e", {"n": n}))
        acked.append(n)

    async with trio.open_nursery() as nursery:
        for n in range(50):
            nursery.start_soon(append, n)
        await trio.lowlevel.checkpoint()  # they are queued, or in a batch being committed
        nursery.cancel_scope.cancel()
    assert acked == []
    await sql_backend.events.append_durable(RoomEvent("r", "after"))
    await sql_backend.events.flush()
    types = [e.type for e in await sql_backend.events.read("r", limit=100)]
    assert types[-1] == "after"


async def test_flush_waits_for_pending_appends(sql_backend: SqlBackend) -> None:
    async with trio.open_nursery() as nursery:
        for n in range(100):
            nursery.start_soon(sql_backend.events.append_durable, RoomEvent("r", "e", {"n": n}))
        await trio.lowlevel.checkpoint()
        await sql_backend.events.flush()
        assert len(await sql_backend.events.read("r", limit=200)) == 100
