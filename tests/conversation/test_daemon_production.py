"""The real daemon in production mode (PostgreSQL + Redis) serves conversation sessions.

The daemon migrates the database itself (001 … 007), the repository runs on
the daemon's shared pool, and domain events reach the Redis stream
`{key_prefix}conversation.events` through the outbox.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import trio

from tests.conftest import make_config, start_daemon
from tests.conversation.support import PG_URL, REDIS_URL
from tests.support import http

pytestmark = pytest.mark.slow


async def _admin(sql: str) -> None:
    import asyncpg

    from pratico_daemon.storage.aio import aio_as_trio, open_loop

    async def go() -> None:
        conn = await asyncpg.connect(f"{PG_URL}/postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async with open_loop():
        await aio_as_trio(go)()


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """An empty database: the daemon migrates it at start."""
    name = f"pratico_conv_{uuid.uuid4().hex[:12]}"
    await _admin(f'CREATE DATABASE "{name}"')
    yield name
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _stream(prefix: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        entries = client.xrange(f"{prefix}conversation.events")
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]
    finally:
        client.close()


async def test_production_daemon_flow_reaches_the_redis_stream(database: str,
                                                              nursery: trio.Nursery,
                                                              tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    config = make_config(tmp_path / "state", postgres={"dsn": f"{PG_URL}/{database}"},
                         redis={"url": REDIS_URL, "key_prefix": prefix},
                         conversation={"reminder_lead_s": 1})
    daemon = await start_daemon(nursery, config)

    async def rest(method: str, path: str, user: str, body: Any = None,
                   role: str = "student") -> Any:
        reply = await http.request(method, f"{daemon.url}{path}", json=body,
                                   token=daemon.token(user, role))
        assert reply.status in (200, 201), (path, reply.status, reply.body)
        return reply.json()

    start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    slot = await rest("POST", "/timeslots", "admin", {
        "targetLanguageCode": "de", "level": "C1", "startTime": start.isoformat(),
        "durationMinutes": 10, "minParticipants": 2, "maxParticipants": 4}, role="admin")
    for user in ("marie", "jean"):
        await rest("POST", f"/timeslots/{slot['id']}/register", user)
    listing = await rest("GET", "/timeslots?language=DE&level=C1", "marie")
    assert [s["registeredCount"] for s in listing["items"]] == [2]
    await trio.sleep(max(0.0, (start - dt.datetime.now(dt.UTC)).total_seconds()) + 0.2)
    await rest("POST", "/sessions/join", "marie", {"timeSlotId": slot["id"]})
    joined = await rest("POST", "/sessions/join", "jean", {"timeSlotId": slot["id"]})
    assert joined["status"] == "active"
    await rest("POST", f"/sessions/{joined['sessionId']}/leave", "jean")
    await rest("POST", f"/sessions/{joined['sessionId']}/leave", "marie")
    expected = ["registration.created", "registration.created", "timeslot.reminder",
                "participant.joined", "participant.joined", "session.started",
                "participant.left", "participant.left", "session.ended"]
    with trio.fail_after(10):
        while True:
            client = redis.Redis.from_url(REDIS_URL)
            count = client.xlen(f"{prefix}conversation.events")
            client.close()
            if count >= len(expected):
                break
            await trio.sleep(0.1)
    daemon.daemon.request_shutdown()
    entries = _stream(prefix)
    assert [e["type"] for e in entries] == expected
    assert orjson.loads(entries[-1]["payload"])["reason"] == "all_left"
    assert len({e["id"] for e in entries}) == len(entries)
