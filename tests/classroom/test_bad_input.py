"""Bad input on every event gets a clear ERROR ack and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.classroom.harness import Classroom, TestClient

HUGE = "x" * 10_240
JOIN = {"user_id": "s1", "lesson_id": "L1", "role": "student"}
NAME = {"lesson_id": "L1", "display_name": "Ada", "seat_id": "2", "student_id": "s1"}
OUT = {"user_id": "t1", "org_id": "org1"}


def without(payload: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != field}


def with_(payload: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**payload, **changes}


# (who sends it, event, payload, words the message must contain)
CASES: list[tuple[str, str, Any, str]] = [
    ("student", "join_lesson", [], "payload must be an object"),
    ("student", "join_lesson", "join", "payload must be an object"),
    ("student", "join_lesson", {}, "user_id: missing"),
    ("student", "join_lesson", without(JOIN, "lesson_id"), "lesson_id: missing"),
    ("student", "join_lesson", with_(JOIN, lesson_id=HUGE), "lesson_id: longer than 200"),
    ("student", "join_lesson", with_(JOIN, lesson_id=""), "lesson_id: shorter than 1"),
    ("student", "join_lesson", with_(JOIN, lesson_id=7), "lesson_id: expected string"),
    ("student", "join_lesson", with_(JOIN, user_id=None), "user_id: expected string"),
    ("student", "join_lesson", with_(JOIN, role="admin"), "role: not one of"),
    ("student", "join_lesson", with_(JOIN, access_token=12), "access_token: expected string"),
    ("student", "join_lesson", with_(JOIN, access_token="not.a.jwt"), "invalid token"),
    ("student", "set_student_name", {}, "lesson_id: missing"),
    ("student", "set_student_name", without(NAME, "display_name"), "display_name: missing"),
    ("student", "set_student_name", with_(NAME, display_name=""), "display_name: shorter"),
    ("student", "set_student_name", with_(NAME, display_name="   "), "display_name: blank"),
    ("student", "set_student_name", with_(NAME, display_name=HUGE), "display_name: longer"),
    ("student", "set_student_name", with_(NAME, seat_id="abc"), "seat_id: not a seat number"),
    ("student", "set_student_name", with_(NAME, seat_id=0), "seat_id: not a seat of"),
    ("student", "set_student_name", with_(NAME, seat_id="99"), "seat_id: not a seat of"),
    ("student", "set_student_name", with_(NAME, seat_id=True), "seat_id: expected"),
    ("student", "set_student_name", with_(NAME, student_id=[]), "student_id: expected string"),
    ("student", "set_student_name", with_(NAME, lesson_id=HUGE), "lesson_id: longer than 200"),
    ("student", "join_lesson", with_(JOIN, lesson_id="L\x001"), "lesson_id: contains a NUL"),
    ("student", "set_student_name", with_(NAME, display_name="A\x00"), "display_name: contains"),
    ("teacher", "logout", {}, "user_id: missing"),
    ("teacher", "logout", with_(OUT, user_id=5), "user_id: expected string"),
    ("teacher", "logout", with_(OUT, org_id=None), "org_id: expected string"),
    ("teacher", "logout", with_(OUT, org_id=HUGE), "org_id: longer than 200"),
    ("manager", "force_logout", {}, "user_id: missing"),
    ("manager", "force_logout", with_(OUT, user_id={}), "user_id: expected string"),
    ("manager", "force_logout", with_(OUT, user_id=HUGE), "user_id: longer than 200"),
    ("manager", "force_logout", without(OUT, "org_id"), "org_id: missing"),
]
CODES = {"invalid token": "unauthorized"}


async def _client(bed: Classroom, who: str) -> TestClient:
    if who == "teacher":
        return await bed.teacher("t1")
    if who == "manager":
        return await bed.manager("m1")
    student = await bed.student("s1")
    joined = await bed.emit(student, "join_lesson", JOIN)
    assert joined["status"] == "SUCCESS"
    return student


async def _snapshot(bed: Classroom) -> Any:
    keys = sorted(await bed.presence.scan("*"))
    strings = ("cooldown:", "presence_node:")  # the rest are hashes
    values = [await bed.presence.hgetall(k) if not k.startswith(strings)
              else await bed.presence.get(k) for k in keys]
    attendance = await bed.repo.attendance("L1")
    lesson = await bed.repo.get("L1")
    return keys, values, attendance, lesson.status


@pytest.mark.parametrize(("who", "event", "payload", "words"), CASES,
                         ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
async def test_bad_input_is_refused_and_changes_nothing(
        ebed: Classroom, who: str, event: str, payload: Any, words: str) -> None:
    await ebed.lesson("L1", seats=4)
    client = await _client(ebed, who)
    await _refused_without_change(ebed, client, event, payload, words)


async def test_bad_input_on_redis_and_postgres(pbed: Classroom) -> None:
    """The same table once through the production stores (one database for all rows)."""
    bed = pbed
    await bed.lesson("L1", seats=4)
    clients = {who: await _client(bed, who) for who in ("teacher", "manager", "student")}
    for who, event, payload, words in CASES:
        await _refused_without_change(bed, clients[who], event, payload, words)


async def _refused_without_change(bed: Classroom, client: TestClient, event: str,
                                  payload: Any, words: str) -> None:
    before = await _snapshot(bed)
    data_before = dict(client.data)
    ack = await bed.emit(client, event, payload)
    assert ack["status"] == "ERROR"
    expected = next((code for w, code in CODES.items() if w in words), "invalid_payload")
    assert ack["data"]["code"] == expected
    assert words in ack["data"]["message"]
    assert await _snapshot(bed) == before
    assert client.data == data_before
    assert client.closed is None
    assert client.events("force_logout") == []

