"""The classroom's Room actors: one manager room per org, one lesson room per lesson.

A manager room's members are the org's ManagerWeb connections; it exists to
fan out `teacher_connect`, `teacher_disconnect` and `logout`. A lesson room's
members are the lesson's teacher and student connections; its state says who
is who, so `set_student_name` reaches the teacher only. Both end when their
last member leaves (a new member opens a fresh one).

Commands here are plain functions run by the room's loop (the only writer of
its state); Redis and Postgres I/O is done by the handlers around them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from pratico_daemon.errors import AppError
from pratico_daemon.rooms.registry import RoomRegistry
from pratico_daemon.rooms.room import Member, Room

T = TypeVar("T")
NAMESPACE = "/classroom"
# A room that ended between `open` and `call` is replaced; twice in a row means
# something keeps ending it, which we report rather than loop on.
_OPEN_ATTEMPTS = 3


def manager_room_id(org_id: str) -> str:
    return f"classroom:managers:{org_id}"


def lesson_room_id(lesson_id: str) -> str:
    return f"classroom:lesson:{lesson_id}"


@attrs.define
class LessonState:
    lesson_id: str
    org_id: str
    teacher_id: str
    teachers: dict[str, str] = attrs.Factory(dict)
    """sid → teacher user id."""
    students: dict[str, str] = attrs.Factory(dict)
    """sid → student client id."""


@attrs.define
class ManagerState:
    org_id: str


def enter_lesson(member: Member, role: str, user_id: str) -> Callable[[Room], int]:
    """Command: seat `member` in the lesson room as teacher or student; members after."""

    def command(room: Room) -> int:
        state: LessonState = room.state
        room.join(member)
        (state.teachers if role == "teacher" else state.students)[member.member_id] = user_id
        return len(room.members)

    return command


def leave(sid: str) -> Callable[[Room], bool]:
    """Command: remove a member; the room ends with its last member. True if it was in."""

    def command(room: Room) -> bool:
        was_in = room.leave(sid) is not None
        state = room.state
        if isinstance(state, LessonState):
            state.teachers.pop(sid, None)
            state.students.pop(sid, None)
        if not room.members:
            room.end()
        return was_in

    return command


def join(member: Member) -> Callable[[Room], None]:
    def command(room: Room) -> None:
        room.join(member)

    return command


def tell_teachers(name: str, payload: Mapping[str, Any]) -> Callable[[Room], int]:
    """Command: send an event to the lesson's teacher connections only; how many got it."""

    def command(room: Room) -> int:
        teachers = list(room.state.teachers)
        room.broadcast(name, payload, only=teachers)
        return len(teachers)

    return command


def tell_all(name: str, payload: Mapping[str, Any]) -> Callable[[Room], int]:
    def command(room: Room) -> int:
        room.broadcast(name, payload)
        return len(room.members)

    return command


def close(name: str | None = None, payload: Mapping[str, Any] | None = None
          ) -> Callable[[Room], None]:
    """Command: optionally tell everyone, then end the room."""

    def command(room: Room) -> None:
        if name is not None:
            room.broadcast(name, payload or {})
        room.end()

    return command


async def open_and_call(registry: RoomRegistry, room_id: str, factory: Callable[[], Room],
                        command: Callable[[Room], T]) -> T:
    """Run `command` in the live room `room_id`, starting it if needed.

    A room ends when its last member leaves; a join racing that end finds the
    room closed (`not_found`) and retries on a fresh one.
    """
    for _ in range(_OPEN_ATTEMPTS):
        room = await registry.open(room_id, factory)
        try:
            return await room.call(command)
        except AppError as exc:
            if exc.code != "not_found":
                raise
    raise AppError("unavailable", "room keeps closing; try again")


async def call_if_open(registry: RoomRegistry, room_id: str, command: Callable[[Room], T]
                       ) -> T | None:
    """Run `command` in room `room_id` if it is live here (None when it is not)."""
    room = registry.get(room_id)
    if room is None:
        return None
    try:
        return await room.call(command)
    except AppError as exc:
        if exc.code == "not_found":
            return None
        raise
