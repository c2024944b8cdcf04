"""The flows of seeds 001 and 002, in-process, on both store flavours."""

from __future__ import annotations

import pytest

from pratico_daemon.errors import AppError
from tests.classroom.harness import Classroom


async def test_teacher_connect_writes_presence_and_tells_managers(bed: Classroom) -> None:
    manager = await bed.manager()
    teacher = await bed.teacher("t1")
    alive = await bed.presence.hgetall("alive:org_org1_user_t1")
    assert alive["state"] == "connect"
    assert alive["login_time"].isdigit()
    assert await bed.presence.ttl("alive:org_org1_user_t1") is None
    session = await bed.presence.hgetall("t1")
    assert session == {"sid": teacher.sid, "client_id": "t1", "role": "teacher",
                       "org_id": "org1"}
    assert 86000 < (await bed.presence.ttl("t1") or 0) <= 86400
    assert manager.events("teacher_connect") == [{"user_id": "t1"}]


async def test_teacher_joins_lesson(bed: Classroom) -> None:
    await bed.lesson("L1", seats=3)
    teacher = await bed.teacher("t1")
    ack = await bed.emit(teacher, "join_lesson",
                         {"user_id": "t1", "lesson_id": "L1", "role": "teacher"})
    assert ack == {"status": "SUCCESS", "data": {
        "lesson_id": "L1", "seat": None, "seats": {"1": "", "2": "", "3": ""},
        "client_id": "t1"}}
    assert await bed.presence.hgetall("lesson_seat_L1") == {"1": "", "2": "", "3": ""}
    assert await bed.presence.hgetall("lesson_teacher_L1") == {"t1": teacher.sid}
    assert 86000 < (await bed.presence.ttl("lesson_teacher_L1") or 0) <= 86400
    assert (await bed.presence.hgetall("t1"))["lesson_id"] == "L1"
    lesson = await bed.repo.get("L1")
    assert lesson.status == "live"
    assert lesson.started_at is not None
    events = await bed.events_of("L1")
    assert [(e.type, e.user_id, e.data["role"]) for e in events] == [
        ("lesson_joined", "t1", "teacher")]


async def test_student_joins_with_seat_and_names_itself(bed: Classroom) -> None:
    await bed.lesson("L1", seats=4)
    await bed.repo.set_attendance("L1", "s1", 2)
    teacher = await bed.teacher("t1")
    await bed.emit(teacher, "join_lesson", {"user_id": "t1", "lesson_id": "L1",
                                            "role": "teacher"})
    student = await bed.student("s1")
    ack = await bed.emit(student, "join_lesson",
                         {"user_id": "s1", "lesson_id": "L1", "role": "student"})
    assert ack["status"] == "SUCCESS"
    assert ack["data"]["seat"] == 2
    assert ack["data"]["seats"] == {"1": "", "2": "s1", "3": "", "4": ""}
    assert await bed.presence.hgetall("lesson_student_L1") == {"s1": student.sid}
    assert 86000 < (await bed.presence.ttl("lesson_student_L1") or 0) <= 86400
    assert await bed.presence.hgetall("s1") == {
        "sid": student.sid, "client_id": "s1", "role": "student", "org_id": "org1",
        "lesson_id": "L1"}

    ack = await bed.emit(student, "set_student_name", {
        "lesson_id": "L1", "display_name": "Ada", "seat_id": "3", "student_id": "s1"})
    assert ack["status"] == "SUCCESS", ack
    assert teacher.events("set_student_name") == [
        {"display_name": "Ada", "seat_id": "3", "student_id": "s1"}]
    assert student.events("set_student_name") == []  # the teacher only
    attendance = await bed.repo.attendance("L1")
    assert [(a.student_id, a.seat, a.display_name) for a in attendance] == [("s1", 3, "Ada")]
    assert await bed.presence.hgetall("lesson_seat_L1") == {
        "1": "", "2": "", "3": "s1", "4": ""}


async def test_anonymous_student_binds_access_token_in_join(bed: Classroom) -> None:
    await bed.lesson("L1", seats=2)
    await bed.repo.set_attendance("L1", "s9", 1)
    student = await bed.student(sub=None, org=None)
    assert student.data["client_id"] == student.sid
    assert (await bed.presence.hgetall(student.sid))["role"] == "student"
    ack = await bed.emit(student, "join_lesson", {
        "user_id": "s9", "lesson_id": "L1", "role": "student",
        "access_token": bed.token("s9", "student")})
    assert ack["status"] == "SUCCESS", ack
    assert ack["data"]["seat"] == 1
    assert ack["data"]["client_id"] == "s9"
    assert student.identity.user_id == "s9"
    assert bed.ns.directory.of_user("s9") == [student]
    assert (await bed.presence.hgetall("s9"))["sid"] == student.sid
    assert await bed.presence.hgetall("lesson_student_L1") == {"s9": student.sid}


async def test_anonymous_student_joins_as_itself(bed: Classroom) -> None:
    await bed.lesson("L1", seats=2)
    student = await bed.student(sub=None, org=None)
    ack = await bed.emit(student, "join_lesson", {
        "user_id": student.sid, "lesson_id": "L1", "role": "student"})
    assert ack["status"] == "SUCCESS"
    assert ack["data"]["seat"] is None
    assert await bed.presence.hgetall("lesson_student_L1") == {student.sid: student.sid}


async def test_join_unknown_and_ended_lessons(bed: Classroom) -> None:
    await bed.lesson("OLD", status="ended")
    teacher = await bed.teacher("t1")
    ack = await bed.emit(teacher, "join_lesson",
                         {"user_id": "t1", "lesson_id": "nope", "role": "teacher"})
    assert ack["status"] == "ERROR"
    assert ack["data"]["code"] == "lesson_not_found"
    ack = await bed.emit(teacher, "join_lesson",
                         {"user_id": "t1", "lesson_id": "OLD", "role": "teacher"})
    assert ack["status"] == "ERROR"
    assert ack["data"]["code"] == "lesson_ended"
    assert not await bed.presence.exists("lesson_seat_OLD")
    assert not await bed.presence.exists("lesson_teacher_OLD")


async def test_teacher_disconnect_grace_and_manager_events(bed: Classroom) -> None:
    manager = await bed.manager()
    teacher = await bed.teacher("t1")
    await bed.drop(teacher)
    alive = await bed.presence.hgetall("alive:org_org1_user_t1")
    assert alive["state"] == "disconnect"
    ttl = await bed.presence.ttl("alive:org_org1_user_t1")
    assert ttl is not None
    assert 290 < ttl <= 300
    assert manager.events("teacher_disconnect") == [{"user_id": "t1"}]
    again = await bed.teacher("t1")
    assert (await bed.presence.hgetall("alive:org_org1_user_t1"))["state"] == "connect"
    assert await bed.presence.ttl("alive:org_org1_user_t1") is None
    assert manager.events("teacher_connect") == [{"user_id": "t1"}, {"user_id": "t1"}]
    assert again.data["teacher_live"]


async def test_several_connections_stay_connected_until_the_last(bed: Classroom) -> None:
    manager = await bed.manager()
    first = await bed.teacher("t1")
    second = await bed.teacher("t1")
    assert manager.events("teacher_connect") == [{"user_id": "t1"}]
    await bed.drop(first)
    assert (await bed.presence.hgetall("alive:org_org1_user_t1"))["state"] == "connect"
    assert manager.events("teacher_disconnect") == []
    await bed.drop(second)
    assert (await bed.presence.hgetall("alive:org_org1_user_t1"))["state"] == "disconnect"
    assert manager.events("teacher_disconnect") == [{"user_id": "t1"}]


async def test_logout_removes_presence_and_closes(bed: Classroom) -> None:
    manager = await bed.manager()
    other_org_manager = await bed.manager("m2", org="org2")
    teacher = await bed.teacher("t1")
    ack = await bed.emit(teacher, "logout", {"user_id": "t1", "org_id": "org1"})
    assert ack == {"status": "SUCCESS", "data": {"user_id": "t1"}}
    assert not await bed.presence.exists("alive:org_org1_user_t1")
    assert manager.events("logout") == [{"user_id": "t1"}]
    assert other_org_manager.events("logout") == []
    await trio_wait(lambda: teacher.closed == "logout")
    await bed.drop(teacher)
    # A logged-out teacher's disconnect puts nothing back into grace.
    assert not await bed.presence.exists("alive:org_org1_user_t1")
    assert manager.events("teacher_disconnect") == []


async def test_force_logout_sets_cooldown_and_refuses_reconnect(bed: Classroom) -> None:
    manager = await bed.manager()
    teacher = await bed.teacher("t1")
    phone = await bed.teacher("t1")
    ack = await bed.emit(manager, "force_logout", {"user_id": "t1", "org_id": "org1"})
    assert ack["status"] == "SUCCESS"
    assert ack["data"]["disconnected"] == 2
    for conn in (teacher, phone):
        assert conn.events("force_logout") == [{"user_id": "t1"}]
        assert conn.closed == "force_logout"
    ttl = await bed.presence.ttl("cooldown:org_org1_user_t1")
    assert ttl is not None
    assert 290 < ttl <= 300
    with pytest.raises(AppError) as refused:
        await bed.teacher("t1")
    assert refused.value.code == "cooldown"
    assert 290 < refused.value.data["retry_after"] <= 300


async def test_lesson_rooms_hold_who_is_connected(bed: Classroom) -> None:
    await bed.lesson("L1", seats=2)
    teacher = await bed.teacher("t1")
    student = await bed.student("s1")
    for client, role, uid in ((teacher, "teacher", "t1"), (student, "student", "s1")):
        ack = await bed.emit(client, "join_lesson",
                             {"user_id": uid, "lesson_id": "L1", "role": role})
        assert ack["status"] == "SUCCESS"
    room = bed.services.rooms.get("classroom:lesson:L1")
    assert room.state.teachers == {teacher.sid: "t1"}
    assert room.state.students == {student.sid: "s1"}
    await bed.drop(student)
    assert room.state.students == {}
    await bed.drop(teacher)
    await room.wait_ended()
    types = [(e.type, e.user_id) for e in await bed.events_of("L1")]
    assert types == [("lesson_joined", "t1"), ("lesson_joined", "s1"), ("lesson_left", "s1"),
                     ("teacher_disconnect", "t1"), ("lesson_left", "t1")]


async def trio_wait(predicate: object, limit_s: float = 5.0) -> None:
    import trio

    with trio.fail_after(limit_s):
        while not predicate():  # type: ignore[operator]  # noqa: ASYNC110
            await trio.sleep(0.001)


async def test_recovered_connection_turns_presence_back_on(bed: Classroom) -> None:
    """Socket.IO connection-state recovery: disconnect, then `reconnected` (no `gone`)."""
    await bed.lesson("L1", seats=2)
    manager = await bed.manager()
    teacher = await bed.teacher("t1")
    await bed.emit(teacher, "join_lesson", {"user_id": "t1", "lesson_id": "L1",
                                            "role": "teacher"})
    await bed.ns.disconnect(teacher, "transport error")
    assert (await bed.presence.hgetall("alive:org_org1_user_t1"))["state"] == "disconnect"
    assert manager.events("teacher_disconnect") == [{"user_id": "t1"}]
    room = bed.services.rooms.get("classroom:lesson:L1")
    assert teacher.sid in room.members  # still seated while it may come back
    await bed.ns.reconnected(teacher)
    assert (await bed.presence.hgetall("alive:org_org1_user_t1"))["state"] == "connect"
    assert await bed.presence.ttl("alive:org_org1_user_t1") is None
    assert manager.events("teacher_connect") == [{"user_id": "t1"}, {"user_id": "t1"}]
    assert (await bed.presence.hgetall("t1"))["lesson_id"] == "L1"
