"""Races decided by PostgreSQL row locks: the last places, the first joins, the min transition."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from tests.conversation.support import (
    backend,
    bed,
    make_slot,
    postgres_database,
    sleep_until,
)


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.1)


async def test_concurrent_registrations_and_joins(tmp_path: Path,
                                                  clock: trio.testing.MockClock) -> None:
    async with postgres_database() as dsn, \
            backend("production", tmp_path / "state", dsn, f"t{uuid.uuid4().hex[:8]}:") as (
                repo, bus), bed(repo, bus, tmp_path / "state") as b:
        slot = await make_slot(b, minParticipants=3, maxParticipants=8)
        outcomes: dict[str, tuple[int, Any]] = {}

        async def attempt(method: str, path: str, user: str, body: Any = None) -> None:
            outcomes[user] = await b.rest(method, path, user, json=body)

        users = [f"u{i:02d}" for i in range(12)]
        async with trio.open_nursery() as nursery:
            for user in users:
                nursery.start_soon(attempt, "POST", f"/timeslots/{slot}/register", user)
        registered = sorted(u for u, (status, _) in outcomes.items() if status == 200)
        refused = [body["error"]["code"] for status, body in outcomes.values() if status != 200]
        assert len(registered) == 8
        assert refused == ["room_full"] * 4

        await sleep_until(20.5, b.service.clock)
        outcomes.clear()
        async with trio.open_nursery() as nursery:
            for user in registered:
                nursery.start_soon(attempt, "POST", "/sessions/join", user,
                                   {"timeSlotId": slot})
        assert {status for status, _ in outcomes.values()} == {200}
        sessions = {body["sessionId"] for _, body in outcomes.values()}
        assert len(sessions) == 1  # one session per slot, whoever came first
        session = sessions.pop()
        _, view = await b.rest("GET", f"/sessions/{session}", "admin")
        assert view["status"] == "active"
        assert sorted(p["userId"] for p in view["participants"]) == registered
        types = await b.published_types()
        assert types.count("session.started") == 1
        assert types.count("participant.joined") == 8
        started = next(e for e in await b.published() if e["type"] == "session.started")
        assert len(orjson.loads(started["payload"])["participants"]) == 3
