"""A daemon that drains (SIGTERM) records its teachers as disconnected before it exits.

Otherwise their alive keys would stay `connect` with no TTL: the lesson would
never end if the teacher did not come back, and the managers would show a
teacher online whom no node serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from tests.classroom.remote import python_client
from tests.classroom.test_e2e import _setup_lesson, teacher_query
from tests.conftest import make_config, start_daemon
from tests.support.redis import REDIS_URL

GRACE_S = 300


async def test_a_drain_puts_connected_teachers_in_grace(tmp_path: Path, redis_prefix: str,
                                                        raw_redis: Any, pg_dsn: str) -> None:
    config = make_config(tmp_path / "state",
                         redis={"url": REDIS_URL, "key_prefix": redis_prefix},
                         postgres={"dsn": pg_dsn}, presence={"disconnect_grace_s": GRACE_S})
    alive = f"{redis_prefix}alive:org_org1_user_t1"
    async with trio.open_nursery() as clients:
        async with trio.open_nursery() as daemon_nursery:
            running = await start_daemon(daemon_nursery, config)
            await _setup_lesson(running)
            teacher = await python_client(clients, running.url)
            assert (await teacher.connect(teacher_query(running)))["connected"]
            ack = await teacher.call("join_lesson", {"user_id": "t1", "lesson_id": "L1",
                                                     "role": "teacher"})
            assert ack["status"] == "SUCCESS"
            assert await raw_redis("HGET", alive, "state") == b"connect"
            assert await raw_redis("PTTL", alive) == -1  # connected: no TTL
            running.daemon.request_shutdown()
        # The daemon has returned: its drain is over.
        assert await raw_redis("HGET", alive, "state") == b"disconnect"
        assert 0 < await raw_redis("PTTL", alive) <= GRACE_S * 1000
        await teacher.send(op="exit")
