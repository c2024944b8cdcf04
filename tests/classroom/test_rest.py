"""REST for lessons through the whole daemon: scoping by org and role, errors as §1c."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import RunningDaemon
from tests.support import http


async def test_create_get_and_seat(running: RunningDaemon) -> None:
    admin = running.token("a1", "admin", "org1")
    teacher = running.token("t1", "teacher", "org1")
    url = running.url
    r = await http.request("POST", f"{url}/lessons", token=admin, json={
        "id": "L1", "org_id": "org1", "teacher_id": "t1", "title": "Maths", "seat_count": 3})
    assert r.status == 201
    assert r.json() == {"id": "L1", "org_id": "org1", "teacher_id": "t1", "title": "Maths",
                        "seat_count": 3, "status": "scheduled", "started_at": None,
                        "ended_at": None}
    again = await http.request("POST", f"{url}/lessons", token=admin, json={
        "id": "L1", "org_id": "org1", "teacher_id": "t1"})
    assert again.status == 409
    assert again.json()["error"]["code"] == "conflict"
    for token in (admin, teacher):
        got = await http.get(f"{url}/lessons/L1", token=token)
        assert got.status == 200
        assert got.json()["title"] == "Maths"
    seat = await http.request("PUT", f"{url}/lessons/L1/attendance/s1", token=teacher,
                              json={"seat": 2, "display_name": "Ada"})
    assert seat.status == 200
    assert seat.json() == {"lesson_id": "L1", "student_id": "s1", "seat": 2,
                           "display_name": "Ada"}
    taken = await http.request("PUT", f"{url}/lessons/L1/attendance/s2", token=teacher,
                               json={"seat": 2})
    assert taken.status == 409
    assert taken.json()["error"]["code"] == "conflict"


async def test_a_teacher_creates_its_own_lessons_only(running: RunningDaemon) -> None:
    teacher = running.token("t1", "teacher", "org1")
    own = await http.request("POST", f"{running.url}/lessons", token=teacher, json={
        "org_id": "org1", "teacher_id": "t1", "title": "Mine", "seat_count": 2})
    assert own.status == 201
    assert len(own.json()["id"]) == 36  # a generated uuid
    for body in ({"org_id": "org1", "teacher_id": "t2"}, {"org_id": "org2", "teacher_id": "t1"}):
        r = await http.request("POST", f"{running.url}/lessons", token=teacher, json=body)
        assert r.status == 403
        assert r.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize(("who", "status"), [
    (("a1", "admin", "org1"), 200),
    (("t1", "teacher", "org1"), 200),
    (("a2", "admin", "org2"), 403),
    (("t2", "teacher", "org1"), 403),
    (("t1", "teacher", "org2"), 403),
    (("s1", "student", "org1"), 403),
    (None, 401),
])
async def test_lessons_are_scoped_by_org_and_role(daemon: RunningDaemon, who: Any,
                                                  status: int) -> None:
    running = daemon
    admin = running.token("a1", "admin", "org1")
    created = await http.request("POST", f"{running.url}/lessons", token=admin, json={
        "id": "L1", "org_id": "org1", "teacher_id": "t1", "seat_count": 2})
    assert created.status == 201
    token = running.token(*who) if who else None
    got = await http.get(f"{running.url}/lessons/L1", token=token)
    assert got.status == status
    put = await http.request("PUT", f"{running.url}/lessons/L1/attendance/s1", token=token,
                             json={"seat": 1})
    assert put.status == status
    if status != 200:
        assert got.json()["error"]["code"] == ("unauthorized" if status == 401 else "forbidden")


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("POST", "/lessons", {"org_id": "org1"}, 400),
    ("POST", "/lessons", {"org_id": "org1", "teacher_id": "t1", "seat_count": -1}, 400),
    ("POST", "/lessons", {"org_id": "org1", "teacher_id": "t1", "seat_count": 10**12}, 400),
    ("POST", "/lessons", {"org_id": "org1", "teacher_id": "t1", "title": 5}, 400),
    ("POST", "/lessons", {"id": "x" * 10240, "org_id": "org1", "teacher_id": "t1"}, 400),
    ("POST", "/lessons", [1, 2], 400),
    ("GET", "/lessons/nope", None, 404),
    ("GET", "/lessons/" + "x" * 10240, None, 400),
    ("PUT", "/lessons/L1/attendance/s1", {"seat": 0}, 400),
    ("PUT", "/lessons/L1/attendance/s1", {"seat": 3}, 400),
    ("PUT", "/lessons/L1/attendance/s1", {"seat": "1"}, 400),
    ("PUT", "/lessons/L1/attendance/s1", {}, 400),
    ("PUT", "/lessons/nope/attendance/s1", {"seat": 1}, 404),
])
async def test_bad_requests_are_4xx(daemon: RunningDaemon, method: str, path: str, body: Any,
                                    status: int) -> None:
    running = daemon
    admin = running.token("a1", "admin", "org1")
    await http.request("POST", f"{running.url}/lessons", token=admin, json={
        "id": "L1", "org_id": "org1", "teacher_id": "t1", "seat_count": 2})
    r = await http.request(method, f"{running.url}{path}", token=admin, json=body)
    assert r.status == status
    assert r.json()["error"]["message"]
    got = await http.get(f"{running.url}/lessons/L1", token=admin)
    assert got.json()["seat_count"] == 2


async def test_nul_characters_are_refused_in_both_modes(running: RunningDaemon) -> None:
    """Postgres cannot store U+0000 and SQLite can: both answer 400 the same way."""
    admin = running.token("a1", "admin", "org1")
    r = await http.request("POST", f"{running.url}/lessons", token=admin, json={
        "org_id": "org1", "teacher_id": "t1", "title": "a\x00b"})
    assert r.status == 400
    assert r.json()["error"]["message"] == "title: contains a NUL character"
    r = await http.get(f"{running.url}/lessons/L%001", token=admin)
    assert r.status == 400
    assert r.json()["error"]["code"] == "invalid_payload"
