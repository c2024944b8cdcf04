"""kill -9 between the database commit and the publish: each event published once, after.

A real daemon process commits registrations (and their outbox rows) while its
bus cannot publish (the stream's key holds a string, so Redis refuses XADD
with WRONGTYPE), is killed with SIGKILL; the key is repaired, and a new
daemon on the same database publishes every pending event exactly once.
(The kill between the publish and the mark is `test_restart.py`'s in-process
test: it needs a stop at one precise await.)
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

from tests.conversation.support import PG_URL, REDIS_URL
from tests.conversation.test_daemon_production import _admin
from tests.support import http
from tests.support.process import daemon_process, write_config

pytestmark = pytest.mark.slow


@pytest.fixture
async def database() -> AsyncIterator[str]:
    name = f"pratico_conv_{uuid.uuid4().hex[:12]}"
    await _admin(f'CREATE DATABASE "{name}"')
    yield name
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _entries(prefix: str) -> list[dict[str, str]]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return [{k.decode(): v.decode() for k, v in fields.items()}
                for _, fields in client.xrange(f"{prefix}conversation.events")]
    finally:
        client.close()


def _drop(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


async def test_kill_between_commit_and_publish(database: str, tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    sections: dict[str, Any] = {"postgres": {"dsn": f"{PG_URL}/{database}"}}
    config = write_config(tmp_path / "daemon.toml", tmp_path / "state", **sections,
                          redis={"url": REDIS_URL, "key_prefix": prefix})
    stream = f"{prefix}conversation.events"
    client = redis.Redis.from_url(REDIS_URL)
    client.set(stream, "not a stream")  # every XADD to it fails
    try:
        async with daemon_process(config) as first:
            from pratico_daemon.auth import Authenticator
            from pratico_daemon.config import from_mapping
            from tests.conftest import TEST_SECRET

            auth = Authenticator.from_config(from_mapping(
                {"auth": {"jwt_secret": TEST_SECRET}}, environ={}))
            start = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)
            created = await http.request("POST", f"{first.url}/timeslots",
                                         token=auth.mint("admin", "admin", "org1", 600), json={
                    "targetLanguageCode": "it", "level": "A1", "startTime": start.isoformat(),
                    "durationMinutes": 30, "minParticipants": 2, "maxParticipants": 8})
            assert created.status == 201, created.body
            for user in ("marie", "jean"):
                reply = await http.request(
                    "POST", f"{first.url}/timeslots/{created.json()['id']}/register",
                    token=auth.mint(user, "student", "org1", 600))
                assert reply.status == 200, reply.body
            await trio.sleep(1.0)  # the relay tries, and fails, to publish
            assert client.get(stream) == b"not a stream"
            assert list(client.scan_iter(match=f"{prefix}bus:published:*")) == []
            first.process.kill()  # SIGKILL: no drain, no flush
            await first.process.wait()
        client.delete(stream)
        async with daemon_process(config) as second:
            with trio.fail_after(15):
                while True:
                    if len(_entries(prefix)) >= 2:
                        break
                    await trio.sleep(0.1)
            await trio.sleep(1.0)  # anything published twice would show by now
            entries = _entries(prefix)
            assert [e["type"] for e in entries] == ["registration.created"] * 2
            assert [orjson.loads(e["payload"])["userId"] for e in entries] == ["marie", "jean"]
            assert len({e["id"] for e in entries}) == 2
            second.process.kill()
            await second.process.wait()
        # A third start republishes nothing.
        async with daemon_process(config):
            await trio.sleep(1.0)
            assert len(_entries(prefix)) == 2
    finally:
        _drop(prefix)
        client.close()
