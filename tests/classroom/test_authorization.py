"""Who may do what: every event × role × same/other org × own/other user, as a table.

Lessons: L1 (org1, teacher t1, 4 seats) and L2 (org2, teacher t9). "other
org" points the payload at org2 (its lesson, or `org_id: org2`); "other user"
names someone else than the connection's own user.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.classroom.harness import Classroom, TestClient

OK = "SUCCESS"
F = "forbidden"

# (event, role, org, user, expected)
MATRIX: list[tuple[str, str, str, str, str]] = [
    ("join_lesson", "teacher", "same", "own", OK),
    ("join_lesson", "teacher", "same", "other", F),
    ("join_lesson", "teacher", "other", "own", F),
    ("join_lesson", "teacher", "other", "other", F),
    ("join_lesson", "student", "same", "own", OK),
    ("join_lesson", "student", "same", "other", F),
    ("join_lesson", "student", "other", "own", F),
    ("join_lesson", "student", "other", "other", F),
    ("join_lesson", "anonymous", "same", "own", OK),
    ("join_lesson", "anonymous", "same", "other", F),
    ("join_lesson", "anonymous", "other", "own", F),
    ("join_lesson", "manager", "same", "own", F),
    ("join_lesson", "manager", "other", "other", F),
    ("set_student_name", "student", "same", "own", OK),
    ("set_student_name", "student", "same", "other", F),
    ("set_student_name", "student", "other", "own", F),
    ("set_student_name", "student", "other", "other", F),
    ("set_student_name", "anonymous", "same", "own", OK),
    ("set_student_name", "anonymous", "same", "other", F),
    ("set_student_name", "teacher", "same", "own", F),
    ("set_student_name", "teacher", "other", "other", F),
    ("set_student_name", "manager", "same", "own", F),
    ("logout", "teacher", "same", "own", OK),
    ("logout", "teacher", "same", "other", F),
    ("logout", "teacher", "other", "own", F),
    ("logout", "teacher", "other", "other", F),
    ("logout", "student", "same", "own", F),
    ("logout", "anonymous", "same", "own", F),
    ("logout", "manager", "same", "own", F),
    ("logout", "manager", "same", "other", F),
    ("force_logout", "manager", "same", "own", OK),
    ("force_logout", "manager", "same", "other", OK),
    ("force_logout", "manager", "other", "own", F),
    ("force_logout", "manager", "other", "other", F),
    ("force_logout", "teacher", "same", "own", F),
    ("force_logout", "teacher", "same", "other", F),
    ("force_logout", "student", "same", "other", F),
    ("force_logout", "anonymous", "same", "other", F),
]


async def _connect(bed: Classroom, role: str) -> tuple[TestClient, str]:
    """A connection of `role` in org1 and its own user id."""
    if role == "teacher":
        return await bed.teacher("t1"), "t1"
    if role == "student":
        return await bed.student("s1"), "s1"
    if role == "anonymous":
        client = await bed.student(sub=None, org="org1")
        return client, client.sid
    return await bed.manager("m1"), "m1"


def _payload(event: str, role: str, own: str, org: str, user: str) -> dict[str, Any]:
    lesson = "L1" if org == "same" else "L2"
    org_id = "org1" if org == "same" else "org2"
    # For force_logout "own" is the org's teacher t1, "other" another teacher t2.
    if event == "force_logout":
        return {"user_id": "t1" if user == "own" else "t2", "org_id": org_id}
    uid = own if user == "own" else "someone-else"
    if event == "join_lesson":
        join_role = "student" if role in ("student", "anonymous", "manager") else "teacher"
        return {"user_id": uid, "lesson_id": lesson, "role": join_role}
    if event == "set_student_name":
        return {"lesson_id": lesson, "display_name": "Ada", "seat_id": "2", "student_id": uid}
    return {"user_id": uid, "org_id": org_id}


@pytest.mark.parametrize(("event", "role", "org", "user", "expected"), MATRIX,
                         ids=["-".join(row[:4]) for row in MATRIX])
async def test_authorization_matrix(ebed: Classroom, event: str, role: str, org: str,
                                    user: str, expected: str) -> None:
    await ebed.lesson("L1", org="org1", teacher="t1", seats=4)
    await ebed.lesson("L2", org="org2", teacher="t9", seats=4)
    client, own = await _connect(ebed, role)
    if event == "set_student_name" and role in ("student", "anonymous"):
        joined = await ebed.emit(client, "join_lesson",
                                 {"user_id": own, "lesson_id": "L1", "role": "student"})
        assert joined["status"] == OK
    before = await ebed.presence.scan("*")
    ack = await ebed.emit(client, event, _payload(event, role, own, org, user))
    if expected == OK:
        assert ack["status"] == OK, ack
    else:
        assert ack == {"status": "ERROR", "data": {"code": expected,
                                                    "message": ack["data"]["message"]}}
        assert ack["data"]["message"]
        assert sorted(await ebed.presence.scan("*")) == sorted(before)
        assert client.closed is None
