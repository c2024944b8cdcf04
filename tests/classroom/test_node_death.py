"""Presence across nodes, with the real daemon on Redis + Postgres (node leases).

kill -9 of the node a teacher is connected to: the next node puts the teacher
in grace, and the grace's expiry ends the lesson (without leases the alive key
stayed `connect` with no TTL for ever). Also: a node cut off from Redis, a
teacher connected to two nodes, and a presence overwritten by a race.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from pratico_daemon.auth import Authenticator
from tests.classroom.remote import Remote, python_client
from tests.conftest import RunningDaemon, make_config, start_daemon
from tests.support import http
from tests.support.process import daemon_process, write_config
from tests.support.redis import REDIS_URL
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow
LEASE_S = 1.5
GRACE_S = 2.0


async def until(read: Callable[[], Awaitable[Any]], expected: Any, limit_s: float) -> None:
    """Poll Redis, written by other processes and nodes, until `read()` gives `expected`."""
    with trio.fail_after(limit_s):
        while await read() != expected:  # noqa: ASYNC110 - nothing in-process to wait on
            await trio.sleep(0.05)


class Seen:
    """Teacher t1's presence keys in Redis, as a test reads them."""

    def __init__(self, raw_redis: Any, prefix: str) -> None:
        self.raw = raw_redis
        self.prefix = prefix
        self.alive = f"{prefix}alive:org_org1_user_t1"

    async def state(self) -> bytes | None:
        return await self.raw("HGET", self.alive, "state")  # type: ignore[no-any-return]

    async def pttl(self) -> int:
        return await self.raw("PTTL", self.alive)  # type: ignore[no-any-return]

    async def held_by(self, node: str) -> list[bytes]:
        return await self.raw(  # type: ignore[no-any-return]
            "HKEYS", f"{self.prefix}presence_teachers:{node}")


def node_config(tmp_path: Path, node: str, pg_dsn: str, redis_prefix: str, *,
                redis_url: str = REDIS_URL, lease_s: float = LEASE_S) -> Any:
    """An in-process node: its own state dir and id, the shared stores, a 60 s grace."""
    return make_config(tmp_path / node, daemon={"node_id": node}, postgres={"dsn": pg_dsn},
                       redis={"url": redis_url, "key_prefix": redis_prefix},
                       presence={"disconnect_grace_s": 60, "node_lease_s": lease_s})


async def teacher_on(nursery: trio.Nursery, node: RunningDaemon) -> Remote:
    """Teacher t1 of org1, connected to `node` with python-socketio."""
    teacher = await python_client(nursery, node.url)
    connected = await teacher.connect({"role": "teacher", "org_id": "org1",
                                       "auth": node.token("t1", "teacher", "org1")})
    assert connected["connected"]
    return teacher


async def test_a_killed_node_s_teacher_goes_into_grace_and_the_lesson_ends(
        nursery: trio.Nursery, tmp_path: Path, pg_dsn: str, redis_prefix: str,
        raw_redis: Any) -> None:
    config_file = write_config(
        tmp_path / "pratico.toml", tmp_path / "state",
        redis={"url": REDIS_URL, "key_prefix": redis_prefix}, postgres={"dsn": pg_dsn},
        presence={"disconnect_grace_s": GRACE_S, "node_lease_s": LEASE_S})
    auth = Authenticator.from_config(make_config(tmp_path / "unused"))
    admin = auth.mint("a1", "admin", "org1")
    alive = f"{redis_prefix}alive:org_org1_user_t1"

    async with daemon_process(config_file) as first:
        created = await http.request("POST", f"{first.url}/lessons", token=admin, json={
            "id": "L1", "org_id": "org1", "teacher_id": "t1", "title": "Algebra",
            "seat_count": 3})
        assert created.status == 201, created.body
        teacher = await python_client(nursery, first.url)
        connected = await teacher.connect({"role": "teacher", "org_id": "org1",
                                           "auth": auth.mint("t1", "teacher", "org1")})
        assert connected["connected"]
        ack = await teacher.call("join_lesson", {"user_id": "t1", "lesson_id": "L1",
                                                 "role": "teacher"})
        assert ack["status"] == "SUCCESS"
        (dead_node,) = await raw_redis("HKEYS", f"{redis_prefix}presence_nodes")
        held = f"{redis_prefix}presence_teachers:{dead_node.decode()}"
        assert await raw_redis("HKEYS", held) == [b"org1/t1"]
        first.process.kill()  # no drain: nobody writes the disconnect
        assert await first.wait_exit(10) == -9
        await teacher.send(op="exit")
    assert await raw_redis("HGET", alive, "state") == b"connect"
    assert await raw_redis("PTTL", alive) == -1

    async with daemon_process(config_file) as second:
        with trio.fail_after(LEASE_S + GRACE_S + 15):
            while True:  # lease runs out, the sweep adopts the teacher, the grace expires
                lesson = await http.request("GET", f"{second.url}/lessons/L1", token=admin)
                assert lesson.status == 200, lesson.body
                if lesson.json()["status"] == "ended":
                    break
                await trio.sleep(0.2)
        assert not await raw_redis("EXISTS", alive)
        assert not await raw_redis("EXISTS", held)
        assert dead_node not in await raw_redis("HKEYS", f"{redis_prefix}presence_nodes")
        adopted = [r for r in second.log_records() if "stopped renewing" in r.get("msg", "")]
        assert adopted and "1 of its teachers" in adopted[0]["msg"]


async def test_a_node_cut_off_longer_than_its_lease_asserts_its_teachers_again(
        nursery: trio.Nursery, tmp_path: Path, pg_dsn: str, redis_prefix: str,
        raw_redis: Any) -> None:
    """Node A loses Redis (a proxy cut) while its teacher stays connected; node B
    takes A for dead and puts the teacher in grace; A comes back and says
    `connect` again before the grace runs out."""
    proxy = TcpProxy("127.0.0.1", 6379)
    proxy_port = await nursery.start(proxy.run)
    a = await start_daemon(nursery, node_config(
        tmp_path, "A", pg_dsn, redis_prefix, redis_url=f"redis://127.0.0.1:{proxy_port}/0"))
    b = await start_daemon(nursery, node_config(tmp_path, "B", pg_dsn, redis_prefix))
    seen = Seen(raw_redis, redis_prefix)
    try:
        teacher = await teacher_on(nursery, a)
        assert await seen.held_by("A") == [b"org1/t1"]

        proxy.cut()
        await until(seen.state, b"disconnect", LEASE_S + 10)  # A's lease runs out; B adopts
        assert 0 < await seen.pttl() <= 60_000
        assert await seen.held_by("A") == []

        proxy.restore()
        await until(seen.state, b"connect", LEASE_S + 15)  # A renews, sees the lapse, asserts
        assert await seen.pttl() == -1
        await until(lambda: seen.held_by("A"), [b"org1/t1"], LEASE_S + 5)  # holds written back
        await teacher.send(op="exit")
    finally:
        a.daemon.request_shutdown()
        b.daemon.request_shutdown()


async def test_a_teacher_on_two_nodes_stays_connected_until_its_last_connection_drops(
        nursery: trio.Nursery, tmp_path: Path, pg_dsn: str, redis_prefix: str,
        raw_redis: Any) -> None:
    nodes = [await start_daemon(nursery, node_config(tmp_path, name, pg_dsn, redis_prefix))
             for name in ("A", "B")]
    seen = Seen(raw_redis, redis_prefix)
    try:
        teachers = [await teacher_on(nursery, node) for node in nodes]
        await teachers[0].close()  # the connection on A drops ...
        await until(lambda: seen.held_by("A"), [], 10)  # ... and A has let go of its hold
        assert await seen.state() == b"connect"  # B still holds the teacher
        assert await seen.pttl() == -1
        await teachers[1].close()  # the last connection: now the grace starts
        await until(seen.state, b"disconnect", 10)
        assert 0 < await seen.pttl() <= 60_000
        for teacher in teachers:
            await teacher.send(op="exit")
    finally:
        for node in nodes:
            node.daemon.request_shutdown()


async def test_a_connected_teacher_whose_presence_was_overwritten_is_repaired(
        nursery: trio.Nursery, tmp_path: Path, pg_dsn: str, redis_prefix: str,
        raw_redis: Any) -> None:
    """A disconnect on another node can race a connect here; the renewal repairs it."""
    node = await start_daemon(nursery, node_config(tmp_path, "A", pg_dsn, redis_prefix))
    seen = Seen(raw_redis, redis_prefix)
    try:
        teacher = await teacher_on(nursery, node)
        await raw_redis("HSET", seen.alive, "state", "disconnect")
        await raw_redis("PEXPIRE", seen.alive, 60_000)
        await until(seen.state, b"connect", LEASE_S + 5)
        assert await seen.pttl() == -1
        await teacher.send(op="exit")
    finally:
        node.daemon.request_shutdown()


async def test_a_disconnect_that_could_not_be_written_is_finished_by_the_renewal(
        nursery: trio.Nursery, tmp_path: Path, pg_dsn: str, redis_prefix: str,
        raw_redis: Any) -> None:
    """The teacher leaves while the node cannot reach Redis ("disconnect not
    recorded"); once Redis answers again, the node's next renewal finds its hold
    without a connection and puts the teacher in grace."""
    proxy = TcpProxy("127.0.0.1", 6379)
    proxy_port = await nursery.start(proxy.run)
    node = await start_daemon(nursery, node_config(
        tmp_path, "A", pg_dsn, redis_prefix, redis_url=f"redis://127.0.0.1:{proxy_port}/0",
        lease_s=30))
    seen = Seen(raw_redis, redis_prefix)
    try:
        teacher = await teacher_on(nursery, node)
        proxy.cut()
        await teacher.close()  # the disconnect's writes fail (bounded by 5 s) ...
        classroom = node.daemon.services.gateway.namespaces["/classroom"]
        with trio.fail_after(15):
            while classroom._live_teachers():  # noqa: ASYNC110 - in-process, no event
                await trio.sleep(0.1)
        await trio.sleep(6)  # the disconnect hook gives up after DISCONNECT_WRITE_TIMEOUT_S
        assert await seen.state() == b"connect"  # nothing written: Redis was away
        proxy.restore()
        await until(seen.state, b"disconnect", 30)  # the next renewal (a third of 30 s)
        assert 0 < await seen.pttl() <= 60_000
        assert await seen.held_by("A") == []
        await teacher.send(op="exit")
    finally:
        node.daemon.request_shutdown()
