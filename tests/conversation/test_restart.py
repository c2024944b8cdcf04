"""Restarts: recomputed from the database, nothing repeated, nothing lost.

A "restart" stops the whole service (its nursery is cancelled at an
arbitrary await, as a kill would stop it) and opens the store again, on the
embedded SQLite file and on PostgreSQL + Redis.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from pratico_daemon.conversation.clock import WallClock
from tests.conversation.support import (
    ORIGIN,
    at,
    backend,
    bed,
    join,
    make_slot,
    postgres_database,
    register,
    sleep_until,
)

Opener = Callable[[], AbstractAsyncContextManager[tuple[Any, Any]]]


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.1)


@pytest.fixture(params=["embedded", "production"])
async def store(request: Any, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens the same store each time it is called (the last opening cleans up)."""
    state = tmp_path / "state"
    if request.param == "embedded":
        yield lambda: backend("embedded", state)
        return
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    async with postgres_database() as dsn:

        @asynccontextmanager
        async def opener() -> AsyncIterator[tuple[Any, Any]]:
            async with backend("production", state, dsn, prefix, drop_keys=False) as pair:
                yield pair

        yield opener
        async with backend("production", state, dsn, prefix):
            pass  # drops the test's Redis keys


async def test_restart_during_waiting(store: Opener, tmp_path: Path,
                                      clock: trio.testing.MockClock) -> None:
    state = tmp_path / "state"
    wall = WallClock(ORIGIN)
    async with store() as (repo, bus), bed(repo, bus, state, clock=wall) as first:
        slot = await make_slot(first)
        await register(first, slot, "marie", "jean")
        marie = await first.connect("marie")
        await sleep_until(15.5, first.service.clock)
        assert len(marie.of("reminder")) == 1
        await sleep_until(20.5, first.service.clock)
        session = (await join(first, slot, "marie"))["sessionId"]
        await first.published()
    # Down for a minute, in Waiting with one participant.
    await trio.sleep(60)
    async with store() as (repo, bus), bed(repo, bus, state, clock=wall) as second:
        await sleep_until(21.6, second.service.clock)
        room = second.services.rooms.get(session)
        assert room is not None
        assert list(room.state.participants) == ["marie"]
        marie = await second.connect("marie")
        assert marie.of("session-state") == [{
            "sessionId": session, "status": "waiting",
            "participants": [{"userId": "marie", "cameraEnabled": True, "micEnabled": True}]}]
        assert marie.of("reminder") == []  # not sent again
        # The grace period still ends at the original time.
        await sleep_until(24.9, second.service.clock)
        assert marie.of("session-ended") == []
        await sleep_until(25.01, second.service.clock)
        assert marie.of("session-ended") == [
            {"sessionId": session, "reason": "not_enough_participants"}]
        types = await second.published_types()
        assert types.count("timeslot.reminder") == 1
        assert types.count("session.ended") == 1


async def test_a_reminder_due_while_down_is_sent_at_restart(
        store: Opener, tmp_path: Path, clock: trio.testing.MockClock) -> None:
    state = tmp_path / "state"
    wall = WallClock(ORIGIN)
    async with store() as (repo, bus), bed(repo, bus, state, clock=wall) as first:
        slot = await make_slot(first)
        await register(first, slot, "marie")
        await sleep_until(10, first.service.clock)
        assert await first.published_types() == ["registration.created"]
    await trio.sleep(7 * 60)  # down from minute 10 to 17; the reminder was due at 15
    async with store() as (repo, bus), bed(repo, bus, state, clock=wall) as second:
        await sleep_until(17.2, second.service.clock)
        entries = [e for e in await second.published() if e["type"] == "timeslot.reminder"]
        assert len(entries) == 1
        assert entries[0]["occurredAt"].startswith(at(17)[:16])
        assert orjson.loads(entries[0]["payload"])["timeSlotId"] == slot


async def test_outbox_kill_between_commit_and_publish_and_between_publish_and_mark(
        store: Opener, tmp_path: Path, clock: trio.testing.MockClock) -> None:
    state = tmp_path / "state"
    wall = WallClock(ORIGIN)
    stuck: list[Any] = []

    async def die_here(events: Any) -> None:
        stuck.extend(events)
        await trio.sleep_forever()  # the daemon is killed while the relay is here

    async with store() as (repo, bus), bed(repo, bus, state, clock=wall) as first:
        assert first.service.relay is not None
        first.service.relay.after_publish = die_here
        slot = await make_slot(first)
        await register(first, slot, "marie")  # committed, published, never marked
        await sleep_until(1, first.service.clock)
        await register(first, slot, "jean")  # committed, never published
        await sleep_until(2, first.service.clock)
        assert [e.type for e in stuck] == ["registration.created"]
        assert [e["type"] for e in await bus.entries("conversation.events")] == [
            "registration.created"]
        pending = await repo.pending_events()
        assert len(pending) == 2
    async with store() as (repo, bus), bed(repo, bus, state, clock=wall) as second:
        await sleep_until(3, second.service.clock)
        entries = await bus.entries("conversation.events")
        assert [e["id"] for e in entries] == [e.id for e in pending]
        assert [orjson.loads(e["payload"])["userId"] for e in entries] == ["marie", "jean"]
        assert await repo.pending_events() == []
        # Publishing the same events again (a second crash replay) changes nothing.
        await bus.publish(pending)
        assert len(await bus.entries("conversation.events")) == 2
        assert second.service.relay is not None
