"""Repository contract: lessons, rooms directory and chat behave alike on both backends."""

from __future__ import annotations

import uuid

import pytest
import trio

from pratico_daemon.storage.protocols import Conflict
from pratico_daemon.storage.repos import (
    Attendance,
    ChatMessage,
    Lesson,
    NotFound,
    RoomRecord,
    create_with_slug,
)
from tests.support.pg import SqlBackend


def lesson(lesson_id: str = "L1", **kw: object) -> Lesson:
    return Lesson(id=lesson_id, org_id="org1", teacher_id="t1", title="Maths", seat_count=30,
                  **kw)  # type: ignore[arg-type]


async def test_lesson_create_get_and_duplicate(sql_backend: SqlBackend) -> None:
    lessons = sql_backend.repos.lessons
    created = await lessons.create(lesson())
    got = await lessons.get("L1")
    assert got is not None
    assert got.to_json() == created.to_json()
    assert got.to_json()["status"] == "scheduled"
    assert await lessons.get("nope") is None
    with pytest.raises(Conflict):
        await lessons.create(lesson())


async def test_attendance_seats_and_names(sql_backend: SqlBackend) -> None:
    lessons = sql_backend.repos.lessons
    await lessons.create(lesson())
    assert await lessons.set_attendance("L1", "s1", 3, "Ana") == Attendance("L1", "s1", 3, "Ana")
    assert await lessons.seat_of("L1", "s1") == 3
    assert await lessons.seat_of("L1", "s2") is None
    with pytest.raises(Conflict, match="seat 3"):
        await lessons.set_attendance("L1", "s2", 3)
    moved = await lessons.set_attendance("L1", "s1", 4)  # keeps the name when None
    assert moved == Attendance("L1", "s1", 4, "Ana")
    assert await lessons.set_display_name("L1", "s1", "Ana B.") is True
    assert await lessons.set_display_name("L1", "ghost", "x") is False
    await lessons.set_attendance("L1", "s2", 3)
    assert [(a.student_id, a.seat, a.display_name) for a in await lessons.attendance("L1")] == [
        ("s2", 3, ""), ("s1", 4, "Ana B.")]
    with pytest.raises(NotFound):
        await lessons.set_attendance("missing", "s1", 1)


async def test_end_lesson_closes_open_quizzes_and_tasks_once(sql_backend: SqlBackend) -> None:
    lessons = sql_backend.repos.lessons
    await lessons.create(lesson())
    await lessons.create(lesson("L2"))
    await lessons.add_quiz("L1", "q1")
    await lessons.add_quiz("L1")
    await lessons.add_task("L1", "t1")
    await lessons.add_quiz("L2", "q-other")
    assert await lessons.start("L1") is True
    assert await lessons.start("L1") is False
    assert await lessons.open_items("L1") == (2, 1)
    assert await lessons.live_lessons_of("org1", "t1") == ["L1", "L2"]

    results: list[bool] = []

    async def end() -> None:
        results.append(await lessons.end("L1"))

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(end)
    assert sorted(results) == [False] * 7 + [True]
    ended = await lessons.get("L1")
    assert ended is not None
    assert ended.status == "ended"
    assert ended.ended_at is not None
    assert await lessons.open_items("L1") == (0, 0)
    assert await lessons.open_items("L2") == (1, 0)  # another lesson is untouched
    assert await lessons.live_lessons_of("org1", "t1") == ["L2"]
    assert await lessons.end("missing") is False
    with pytest.raises(NotFound):
        await lessons.add_task("missing")


async def test_rooms_unique_names_rename_and_lookup(sql_backend: SqlBackend) -> None:
    rooms = sql_backend.repos.rooms
    snapshot = {"document": {"pages": [{"id": "p1", "shapes": ["é", 1.5, None]}]}}
    room = await rooms.create(RoomRecord(name="algebre", created_by="trainer",
                                         capsule_id="c1", capsule_snapshot=snapshot,
                                         params={"navigation_mode": "trainer"}))
    assert room.chat_id is not None
    with pytest.raises(Conflict):
        await rooms.create(RoomRecord(name="algebre", created_by="other"))
    got = await rooms.get(room.id)
    assert got == room
    assert await rooms.get_by_name("algebre") == room
    other = await rooms.create(RoomRecord(name="geo", created_by="trainer"))
    with pytest.raises(Conflict):
        await rooms.rename(other.id, "algebre")
    assert await rooms.rename(other.id, "geometrie") is True
    assert await rooms.rename(uuid.uuid4(), "x") is False
    assert await rooms.get_by_name("geo") is None
    assert await rooms.update(room.id, quiz_id="qz", quiz_scores={"p1": 3}) is True
    updated = await rooms.get(room.id)
    assert updated is not None
    assert updated.quiz_id == "qz"
    assert updated.quiz_scores == {"p1": 3}
    assert updated.capsule_snapshot == snapshot
    with pytest.raises(TypeError):
        await rooms.update(room.id, name="sneaky")


async def test_slug_race_hands_out_each_name_once(sql_backend: SqlBackend) -> None:
    rooms = sql_backend.repos.rooms
    names: list[str] = []

    async def create() -> None:
        made = await create_with_slug(rooms, RoomRecord(name="", created_by="t"), "algebre")
        names.append(made.name)

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(create)
    assert sorted(names) == sorted(["algebre", *(f"algebre-{n}" for n in range(2, 7))])


async def test_chat_messages_and_room_deletion(sql_backend: SqlBackend) -> None:
    rooms, chat = sql_backend.repos.rooms, sql_backend.repos.chat
    room = await rooms.create(RoomRecord(name="r", created_by="t"))
    keep = await rooms.create(RoomRecord(name="keep", created_by="t"))
    texts = ["salut", "  spaces kept  ", "émoji 🎉", "<b>raw</b>"]
    for n, text in enumerate(texts):
        await chat.append(ChatMessage(room.id, f"p{n}", text, display_name=f"P{n}"))
    await chat.append(ChatMessage(keep.id, "p", "other room", chat_id=keep.chat_id))
    assert await chat.count(room.id) == 4
    recent = await chat.recent(room.id, limit=3)
    assert [m.text for m in recent] == texts[1:]
    assert recent[0].chat_id == room.chat_id
    assert recent[0].display_name == "P1"
    assert await rooms.delete(room.id) is True
    assert await rooms.delete(room.id) is False
    assert await rooms.get(room.id) is None
    assert await chat.count(room.id) == 0
    assert await chat.count(keep.id) == 1
    with pytest.raises(NotFound):
        await chat.append(ChatMessage(room.id, "p", "too late"))
    # The name is free again once the room is gone.
    assert (await rooms.create(RoomRecord(name="r", created_by="t"))).name == "r"
    assert await chat.delete_room(keep.id) == 1
