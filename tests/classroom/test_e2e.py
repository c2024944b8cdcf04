"""Seeds 001 and 002 end to end: real clients over real connections to the whole daemon.

Teachers and managers are the npm `socket.io-client`, students python-socketio
(each in its own process); the plain-JSON framing is trio-websocket. Redis keys
and Postgres rows are read back after each step, in embedded and production mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import trio

from tests.classroom.remote import node_client, python_client
from tests.conftest import RunningDaemon, make_config, start_daemon
from tests.support import http
from tests.support.redis import REDIS_URL
from tests.support.ws import ws_client as open_websocket_url


def presence(running: RunningDaemon) -> Any:
    return running.daemon.services.stores.presence


def lessons(running: RunningDaemon) -> Any:
    return running.daemon.services.stores.repos.lessons


async def _setup_lesson(running: RunningDaemon) -> None:
    admin = running.token("a1", "admin", "org1")
    r = await http.request("POST", f"{running.url}/lessons", token=admin, json={
        "id": "L1", "org_id": "org1", "teacher_id": "t1", "title": "Algebra", "seat_count": 3})
    assert r.status == 201
    r = await http.request("PUT", f"{running.url}/lessons/L1/attendance/s1", token=admin,
                           json={"seat": 2})
    assert r.status == 200


def teacher_query(running: RunningDaemon, sub: str = "t1") -> dict[str, str]:
    return {"role": "teacher", "org_id": "org1", "auth": running.token(sub, "teacher", "org1")}


async def test_seed_flows_with_real_clients(running: RunningDaemon, nursery: trio.Nursery,
                                            raw_redis: Any) -> None:
    await _setup_lesson(running)
    p = presence(running)

    manager = await node_client(nursery, running.url)
    ok = await manager.connect({"role": "admin", "org_id": "org1", "product_type": "manager",
                                "auth": running.token("a1", "admin", "org1")})
    assert ok["connected"]

    # Teacher connects (auth in the query string, as the seeds do).
    teacher = await node_client(nursery, running.url)
    assert (await teacher.connect(teacher_query(running)))["connected"]
    assert await manager.event("teacher_connect") == {"user_id": "t1"}
    alive = await p.hgetall("alive:org_org1_user_t1")
    assert alive["state"] == "connect"
    assert await p.hgetall("t1") == {"sid": teacher.id, "client_id": "t1", "role": "teacher",
                                     "org_id": "org1"}
    if running.mode == "production":  # type: ignore[attr-defined]
        prefix = running.redis_prefix  # type: ignore[attr-defined]
        raw = await raw_redis("HGETALL", f"{prefix}alive:org_org1_user_t1")
        assert raw[b"state"] == b"connect"
        assert await raw_redis("TTL", f"{prefix}t1") > 86000

    ack = await teacher.call("join_lesson", {"user_id": "t1", "lesson_id": "L1",
                                             "role": "teacher"})
    assert ack == {"status": "SUCCESS", "data": {"lesson_id": "L1", "seat": None, "seats": {
        "1": "", "2": "", "3": ""}, "client_id": "t1"}}
    assert await p.hgetall("lesson_teacher_L1") == {"t1": teacher.id}
    assert (await lessons(running).get("L1")).status == "live"

    # A student with a token (python-socketio), seated by attendance, names itself.
    student = await python_client(nursery, running.url)
    ok = await student.connect({"role": "student", "auth": running.token("s1", "student",
                                                                           "org1")})
    assert ok["connected"], ok
    ack = await student.call("join_lesson", {"user_id": "s1", "lesson_id": "L1",
                                             "role": "student"})
    assert ack["status"] == "SUCCESS", ack
    assert ack["data"]["seat"] == 2
    assert ack["data"]["seats"]["2"] == "s1"
    assert await p.hgetall("lesson_student_L1") == {"s1": student.id}
    ack = await student.call("set_student_name", {"lesson_id": "L1", "display_name": "Ada",
                                                  "seat_id": "3", "student_id": "s1"})
    assert ack["status"] == "SUCCESS", ack
    assert await teacher.event("set_student_name") == {"display_name": "Ada", "seat_id": "3",
                                                       "student_id": "s1"}
    rows = await lessons(running).attendance("L1")
    assert [(a.student_id, a.seat, a.display_name) for a in rows] == [("s1", 3, "Ada")]
    assert await p.hgetall("lesson_seat_L1") == {"1": "", "2": "", "3": "s1"}

    # An anonymous student binds its account with access_token in join_lesson.
    anon = await python_client(nursery, running.url)
    assert (await anon.connect({"role": "student", "org_id": "org1"}))["connected"]
    ack = await anon.call("join_lesson", {"user_id": "s2", "lesson_id": "L1",
                                          "role": "student",
                                          "access_token": running.token("s2", "student", "org1")})
    assert ack["status"] == "SUCCESS", ack
    assert ack["data"]["client_id"] == "s2"
    assert (await p.hgetall("lesson_student_L1"))["s2"] == anon.id

    # Errors come back as ERROR acks with codes.
    ack = await student.call("join_lesson", {"user_id": "s1", "lesson_id": "nope",
                                             "role": "student"})
    assert ack["status"] == "ERROR"
    assert ack["data"]["code"] == "lesson_not_found"
    ack = await student.call("join_lesson", {"user_id": "s1", "lesson_id": "x" * 10240,
                                             "role": "student"})
    assert ack["data"]["code"] == "invalid_payload"

    # Teacher drops: grace; comes back: connect again; the lesson stays.
    await teacher.close()
    assert await manager.event("teacher_disconnect") == {"user_id": "t1"}
    assert (await p.hgetall("alive:org_org1_user_t1"))["state"] == "disconnect"
    assert 250 < (await p.ttl("alive:org_org1_user_t1") or 0) <= 300
    teacher2 = await node_client(nursery, running.url)
    assert (await teacher2.connect(teacher_query(running)))["connected"]
    await manager.expect(lambda o: o.get("event") == "teacher_connect")
    assert await p.ttl("alive:org_org1_user_t1") is None

    # The manager forces the teacher out: told, disconnected, refused for the cooldown.
    ack = await manager.call("force_logout", {"user_id": "t1", "org_id": "org1"})
    assert ack["status"] == "SUCCESS", ack
    assert await teacher2.event("force_logout") == {"user_id": "t1"}
    await teacher2.expect(lambda o: "disconnected" in o, anywhere=True)
    teacher3 = await node_client(nursery, running.url)
    refused = await teacher3.connect(teacher_query(running))
    assert refused["data"]["code"] == "cooldown"
    assert 250 < refused["data"]["retry_after"] <= 300

    events = await running.daemon.services.stores.events.read("L1")
    types = [e.type for e in events]
    assert types[:3] == ["lesson_joined", "lesson_joined", "student_named"]
    assert "teacher_disconnect" in types
    for remote in (manager, teacher, student, anon, teacher2, teacher3):
        await remote.send(op="exit")


async def test_logout_with_a_real_client(running: RunningDaemon, nursery: trio.Nursery) -> None:
    manager = await node_client(nursery, running.url)
    await manager.connect({"role": "admin", "org_id": "org1", "product_type": "manager"},
                          auth={"token": running.token("a1", "admin", "org1")})
    teacher = await node_client(nursery, running.url)
    assert (await teacher.connect(teacher_query(running)))["connected"]
    ack = await teacher.call("logout", {"user_id": "t1", "org_id": "org1"})
    assert ack == {"status": "SUCCESS", "data": {"user_id": "t1"}}
    await teacher.expect(lambda o: "disconnected" in o, anywhere=True)
    assert await manager.event("logout") == {"user_id": "t1"}
    assert not await presence(running).exists("alive:org_org1_user_t1")
    await trio.sleep(0.2)
    assert manager.events("teacher_disconnect") == []
    for remote in (manager, teacher):
        await remote.send(op="exit")


async def test_plain_json_framing(running: RunningDaemon) -> None:
    await _setup_lesson(running)
    token = running.token("t1", "teacher", "org1")
    url = f"{running.ws_url}/ws/classroom?role=teacher&org_id=org1&token={token}"
    async with open_websocket_url(url) as ws:
        await ws.send_message(orjson.dumps({"type": "join_lesson", "ref": 7, "user_id": "t1",
                                            "lesson_id": "L1", "role": "teacher"}).decode())
        with trio.fail_after(10):
            while True:
                message = orjson.loads(await ws.get_message())
                if message.get("type") == "reply":
                    break
    assert message["ref"] == 7
    assert message["status"] == "SUCCESS"
    assert message["data"]["lesson_id"] == "L1"
    assert await presence(running).hgetall("lesson_teacher_L1") != {}


async def test_grace_expiry_end_to_end_on_real_redis(nursery: trio.Nursery, tmp_path: Path,
                                                     redis_prefix: str, raw_redis: Any,
                                                     pg_dsn: str) -> None:
    config = make_config(tmp_path / "state",
                         redis={"url": REDIS_URL, "key_prefix": redis_prefix},
                         postgres={"dsn": pg_dsn}, presence={"disconnect_grace_s": 2})
    running = await start_daemon(nursery, config)
    try:
        await _setup_lesson(running)
        manager = await node_client(nursery, running.url)
        await manager.connect({"role": "admin", "org_id": "org1", "product_type": "manager",
                               "auth": running.token("a1", "admin", "org1")})
        teacher = await node_client(nursery, running.url)
        assert (await teacher.connect(teacher_query(running)))["connected"]
        ack = await teacher.call("join_lesson", {"user_id": "t1", "lesson_id": "L1",
                                                 "role": "teacher"})
        assert ack["status"] == "SUCCESS"
        await teacher.close()
        await manager.event("teacher_disconnect")
        closed_at = trio.current_time()
        assert await manager.event("logout", limit_s=10) == {"user_id": "t1"}
        assert 1.5 < trio.current_time() - closed_at < 6
        lesson = await lessons(running).get("L1")
        assert lesson.status == "ended"
        assert not await raw_redis("EXISTS", f"{redis_prefix}alive:org_org1_user_t1")
        for remote in (manager, teacher):
            await remote.send(op="exit")
    finally:
        running.daemon.request_shutdown()

