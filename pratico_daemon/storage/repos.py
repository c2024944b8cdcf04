"""Repositories of the products: records, protocols, and helpers common to both backends.

Implementations: `pg_repos.pg_repos(pg)` (PostgreSQL) and
`embedded_sql.EmbeddedDb.repos()` (SQLite). Both pass `tests/storage/test_repos_contract.py`.

Errors: `Conflict` when a uniqueness or state rule says no (room name taken,
seat taken, lesson id taken), `NotFound` when the row a write refers to does
not exist, `StorageUnavailable` when the database does not answer.
Conversation tables (timeslots, registrations, sessions, participants,
outbox) exist in the schema; their repositories come with issue 7.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any, Literal, Protocol

import attrs

from pratico_daemon.storage.protocols import Conflict, new_event_id, utcnow

LessonStatus = Literal["scheduled", "live", "ended"]
# Columns of `rooms` that `RoomRepo.update` may change.
ROOM_MUTABLE = frozenset({"capsule_id", "capsule_snapshot", "quiz_id", "quiz_scores", "params"})


@attrs.frozen
class Lesson:
    id: str
    org_id: str
    teacher_id: str
    title: str = ""
    seat_count: int = 0
    status: LessonStatus = "scheduled"
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    created_at: dt.datetime = attrs.field(factory=utcnow)

    def to_json(self) -> dict[str, Any]:
        """The REST shape of PROTOCOL.md §2 (`GET /lessons/{id}`)."""
        return {
            "id": self.id, "org_id": self.org_id, "teacher_id": self.teacher_id,
            "title": self.title, "seat_count": self.seat_count, "status": self.status,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
        }


@attrs.frozen
class Attendance:
    lesson_id: str
    student_id: str
    seat: int
    display_name: str = ""


@attrs.frozen
class RoomRecord:
    """A live Pratico room's row (seed 000). `chat_id` is set by `RoomRepo.create`."""

    name: str
    created_by: str
    id: uuid.UUID = attrs.field(factory=new_event_id)
    org_id: str | None = None
    capsule_id: str | None = None
    capsule_snapshot: Any = None
    quiz_id: str | None = None
    quiz_scores: Mapping[str, Any] = attrs.field(factory=dict)
    params: Mapping[str, Any] = attrs.field(factory=dict)
    created_at: dt.datetime = attrs.field(factory=utcnow)
    chat_id: uuid.UUID | None = None


@attrs.frozen
class ChatMessage:
    room_id: uuid.UUID
    participant_id: str
    text: str
    display_name: str = ""
    id: uuid.UUID = attrs.field(factory=new_event_id)
    ts: dt.datetime = attrs.field(factory=utcnow)
    # The room's chat; None means "the room's (first) chat", looked up on insert.
    chat_id: uuid.UUID | None = None


class NotFound(LookupError):
    """The row a write refers to does not exist (a lesson, a room)."""


class LessonRepo(Protocol):
    async def create(self, lesson: Lesson) -> Lesson:
        """Insert; `Conflict` when the id exists."""
        ...

    async def get(self, lesson_id: str) -> Lesson | None: ...

    async def set_attendance(self, lesson_id: str, student_id: str, seat: int,
                             display_name: str | None = None) -> Attendance:
        """Seat a student (insert or move); `Conflict` if another student has that seat,
        `NotFound` if the lesson does not exist. `display_name=None` keeps the current one."""
        ...

    async def set_display_name(self, lesson_id: str, student_id: str,
                               display_name: str) -> bool:
        """False when the student has no attendance row in that lesson."""
        ...

    async def seat_of(self, lesson_id: str, student_id: str) -> int | None: ...

    async def attendance(self, lesson_id: str) -> list[Attendance]:
        """Every seated student, by seat."""
        ...

    async def start(self, lesson_id: str, at: dt.datetime | None = None) -> bool:
        """scheduled → live; True when this call changed it."""
        ...

    async def end(self, lesson_id: str, at: dt.datetime | None = None) -> bool:
        """→ ended, closing the lesson's open quizzes and tasks, in ONE conditional
        statement; True only for the call that ended it (several daemons may try)."""
        ...

    async def live_lessons_of(self, org_id: str, teacher_id: str) -> list[str]:
        """Ids of the teacher's lessons that are not ended."""
        ...

    async def add_quiz(self, lesson_id: str, quiz_id: str | None = None,
                       title: str = "") -> str: ...

    async def add_task(self, lesson_id: str, task_id: str | None = None,
                       title: str = "") -> str: ...

    async def open_items(self, lesson_id: str) -> tuple[int, int]:
        """(open quizzes, open tasks) of a lesson."""
        ...


class RoomRepo(Protocol):
    async def create(self, room: RoomRecord) -> RoomRecord:
        """Insert the room and its chat in one transaction; `Conflict` when the name
        (or id) is taken by a live room. Returns the record with `chat_id` set."""
        ...

    async def rename(self, room_id: uuid.UUID, name: str) -> bool:
        """False when the room does not exist; `Conflict` when the name is taken."""
        ...

    async def get(self, room_id: uuid.UUID) -> RoomRecord | None: ...

    async def get_by_name(self, name: str) -> RoomRecord | None: ...

    async def update(self, room_id: uuid.UUID, **fields: Any) -> bool:
        """Change some of `ROOM_MUTABLE`; False when the room does not exist."""
        ...

    async def delete(self, room_id: uuid.UUID) -> bool:
        """Delete the room, its chats and their messages; False if it was not there."""
        ...


class ChatRepo(Protocol):
    async def append(self, message: ChatMessage) -> None:
        """`NotFound` when the room has no chat (it ended)."""
        ...

    async def count(self, room_id: uuid.UUID) -> int: ...

    async def recent(self, room_id: uuid.UUID, limit: int = 50) -> list[ChatMessage]:
        """The room's last `limit` messages, oldest first."""
        ...

    async def delete_room(self, room_id: uuid.UUID) -> int:
        """Delete the room's messages; returns how many."""
        ...


@attrs.frozen
class Repos:
    """What `Stores.repos` holds."""

    lessons: LessonRepo
    rooms: RoomRepo
    chat: ChatRepo


def check_room_fields(fields: Mapping[str, Any]) -> None:
    unknown = set(fields) - ROOM_MUTABLE
    if unknown:
        raise TypeError(f"not updatable: {', '.join(sorted(unknown))}")


async def create_with_slug(rooms: RoomRepo, room: RoomRecord, slug: str,
                           attempts: int = 100) -> RoomRecord:
    """Create `room` named `slug`, else `slug-2`, `slug-3`…: the first free name wins.

    The unique constraint decides, so two daemons racing for one name cannot
    both get it; the loser moves on to the next suffix.
    """
    for n in range(1, attempts + 1):
        name = slug if n == 1 else f"{slug}-{n}"
        try:
            return await rooms.create(attrs.evolve(room, name=name))
        except Conflict:
            continue
    raise Conflict(f"no free name for {slug!r} after {attempts} attempts")
