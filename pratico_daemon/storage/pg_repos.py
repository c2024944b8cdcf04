"""The repositories of `repos.py` on PostgreSQL.

Each method is one crossing of the trio/asyncio bridge (`Postgres.run`) and,
where it writes several tables, one transaction or one statement. JSON
columns go in as text cast to jsonb and come back as text, decoded with orjson
(asyncpg's default jsonb codec would round-trip through the stdlib json).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import attrs
import orjson

from pratico_daemon.storage.postgres import Postgres
from pratico_daemon.storage.protocols import Conflict, new_event_id, utcnow
from pratico_daemon.storage.repos import (
    Attendance,
    ChatMessage,
    Lesson,
    NotFound,
    Repos,
    RoomRecord,
    check_room_fields,
)


async def _fetchrow(conn: asyncpg.Connection, sql: str, *args: Any) -> Any:
    return await conn.fetchrow(sql, *args)


async def _fetch(conn: asyncpg.Connection, sql: str, *args: Any) -> Any:
    return await conn.fetch(sql, *args)


async def _fetchval(conn: asyncpg.Connection, sql: str, *args: Any) -> Any:
    return await conn.fetchval(sql, *args)


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _unjson(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


_LESSON_COLS = "id, org_id, teacher_id, title, seat_count, status, started_at, ended_at, created_at"


def _lesson(row: Any) -> Lesson:
    return Lesson(**dict(row))


class PgLessons:
    def __init__(self, pg: Postgres) -> None:
        self.pg = pg

    async def create(self, lesson: Lesson) -> Lesson:
        row = await self.pg.run(
            _fetchrow,
            f"INSERT INTO lessons ({_LESSON_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)"
            f" RETURNING {_LESSON_COLS}",
            lesson.id, lesson.org_id, lesson.teacher_id, lesson.title, lesson.seat_count,
            lesson.status, lesson.started_at, lesson.ended_at, lesson.created_at)
        return _lesson(row)

    async def get(self, lesson_id: str) -> Lesson | None:
        row = await self.pg.run(
            _fetchrow, f"SELECT {_LESSON_COLS} FROM lessons WHERE id = $1", lesson_id)
        return _lesson(row) if row else None

    async def set_attendance(self, lesson_id: str, student_id: str, seat: int,
                             display_name: str | None = None) -> Attendance:
        try:
            row = await self.pg.run(_set_attendance, lesson_id, student_id, seat, display_name)
        except Conflict as exc:
            raise Conflict(f"seat {seat} of lesson {lesson_id} is taken") from exc
        if row is None:
            raise NotFound(f"lesson {lesson_id}")
        return Attendance(*row)

    async def set_display_name(self, lesson_id: str, student_id: str,
                               display_name: str) -> bool:
        row = await self.pg.run(
            _fetchval, "UPDATE student_attend SET display_name = $3"
            " WHERE lesson_id = $1 AND student_id = $2 RETURNING 1",
            lesson_id, student_id, display_name)
        return row is not None

    async def seat_of(self, lesson_id: str, student_id: str) -> int | None:
        value: int | None = await self.pg.run(
            _fetchval, "SELECT seat FROM student_attend WHERE lesson_id = $1 AND student_id = $2",
            lesson_id, student_id)
        return value

    async def attendance(self, lesson_id: str) -> list[Attendance]:
        rows = await self.pg.run(
            _fetch, "SELECT lesson_id, student_id, seat, display_name FROM student_attend"
            " WHERE lesson_id = $1 ORDER BY seat", lesson_id)
        return [Attendance(*r) for r in rows]

    async def start(self, lesson_id: str, at: dt.datetime | None = None) -> bool:
        value = await self.pg.run(
            _fetchval, "UPDATE lessons SET status = 'live', started_at = $2"
            " WHERE id = $1 AND status = 'scheduled' RETURNING 1", lesson_id, at or utcnow())
        return value is not None

    async def end(self, lesson_id: str, at: dt.datetime | None = None) -> bool:
        # One statement: concurrent callers serialise on the lesson's row lock
        # and re-check `status <> 'ended'` (READ COMMITTED), so one wins.
        won = await self.pg.run(_fetchval, _END_LESSON, lesson_id, at or utcnow())
        return bool(won)

    async def live_lessons_of(self, org_id: str, teacher_id: str) -> list[str]:
        rows = await self.pg.run(
            _fetch, "SELECT id FROM lessons WHERE org_id = $1 AND teacher_id = $2"
            " AND status <> 'ended' ORDER BY created_at", org_id, teacher_id)
        return [r[0] for r in rows]

    async def add_quiz(self, lesson_id: str, quiz_id: str | None = None,
                       title: str = "") -> str:
        return await self._add("quizzes", lesson_id, quiz_id, title)

    async def add_task(self, lesson_id: str, task_id: str | None = None,
                       title: str = "") -> str:
        return await self._add("tasks", lesson_id, task_id, title)

    async def _add(self, table: str, lesson_id: str, item_id: str | None, title: str) -> str:
        item_id = item_id or str(new_event_id())
        inserted = await self.pg.run(
            _fetchval, f"INSERT INTO {table} (id, lesson_id, title) SELECT $1, id, $3"
            " FROM lessons WHERE id = $2 RETURNING 1", item_id, lesson_id, title)
        if inserted is None:
            raise NotFound(f"lesson {lesson_id}")
        return item_id

    async def open_items(self, lesson_id: str) -> tuple[int, int]:
        row = await self.pg.run(
            _fetchrow, "SELECT (SELECT count(*) FROM quizzes WHERE lesson_id = $1"
            " AND status = 'open'), (SELECT count(*) FROM tasks WHERE lesson_id = $1"
            " AND status = 'open')", lesson_id)
        return int(row[0]), int(row[1])


_END_LESSON = """
WITH ended AS (
    UPDATE lessons SET status = 'ended', ended_at = $2
    WHERE id = $1 AND status <> 'ended' RETURNING id
), q AS (
    UPDATE quizzes SET status = 'closed', closed_at = $2
    WHERE lesson_id IN (SELECT id FROM ended) AND status = 'open'
), t AS (
    UPDATE tasks SET status = 'closed', closed_at = $2
    WHERE lesson_id IN (SELECT id FROM ended) AND status = 'open'
)
SELECT count(*) FROM ended
"""


async def _set_attendance(conn: asyncpg.Connection, lesson_id: str, student_id: str,
                          seat: int, display_name: str | None) -> Any:
    async with conn.transaction():
        if not await conn.fetchval("SELECT 1 FROM lessons WHERE id = $1", lesson_id):
            return None
        return await conn.fetchrow(
            "INSERT INTO student_attend (lesson_id, student_id, seat, display_name)"
            " VALUES ($1, $2, $3, COALESCE($4, ''))"
            " ON CONFLICT (lesson_id, student_id) DO UPDATE SET seat = EXCLUDED.seat,"
            " display_name = COALESCE($4, student_attend.display_name)"
            " RETURNING lesson_id, student_id, seat, display_name",
            lesson_id, student_id, seat, display_name)


_ROOM_COLS = ("r.id, r.name, r.created_by, r.org_id, r.capsule_id, r.capsule_snapshot::text,"
              " r.quiz_id, r.quiz_scores::text, r.params::text, r.created_at,"
              " (SELECT c.id FROM chats c WHERE c.room_id = r.id ORDER BY c.created_at LIMIT 1)")


def _room(row: Any) -> RoomRecord:
    (id_, name, created_by, org_id, capsule_id, snapshot, quiz_id, scores, params,
     created_at, chat_id) = row
    return RoomRecord(id=id_, name=name, created_by=created_by, org_id=org_id,
                      capsule_id=capsule_id, capsule_snapshot=_unjson(snapshot),
                      quiz_id=quiz_id, quiz_scores=_unjson(scores) or {},
                      params=_unjson(params) or {}, created_at=created_at, chat_id=chat_id)


async def _create_room(conn: asyncpg.Connection, room: RoomRecord, chat_id: uuid.UUID) -> None:
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO rooms (id, name, created_at, created_by, org_id, capsule_id,"
            " capsule_snapshot, quiz_id, quiz_scores, params)"
            " VALUES ($1,$2,$3,$4,$5,$6,$7::jsonb,$8,$9::jsonb,$10::jsonb)",
            room.id, room.name, room.created_at, room.created_by, room.org_id, room.capsule_id,
            _json(room.capsule_snapshot), room.quiz_id, _json(dict(room.quiz_scores)),
            _json(dict(room.params)))
        await conn.execute("INSERT INTO chats (id, created_at, room_id) VALUES ($1, $2, $3)",
                           chat_id, room.created_at, room.id)


async def _delete_room(conn: asyncpg.Connection, room_id: uuid.UUID) -> bool:
    async with conn.transaction():
        await conn.execute("DELETE FROM chat_messages WHERE room_id = $1", room_id)
        await conn.execute("DELETE FROM chats WHERE room_id = $1", room_id)
        return await conn.fetchval("DELETE FROM rooms WHERE id = $1 RETURNING 1",
                                   room_id) is not None


class PgRooms:
    def __init__(self, pg: Postgres) -> None:
        self.pg = pg

    async def create(self, room: RoomRecord) -> RoomRecord:
        chat_id = new_event_id()
        await self.pg.run(_create_room, room, chat_id)
        return RoomRecord(**{**_fields(room), "chat_id": chat_id})

    async def rename(self, room_id: uuid.UUID, name: str) -> bool:
        value = await self.pg.run(
            _fetchval, "UPDATE rooms SET name = $2 WHERE id = $1 RETURNING 1", room_id, name)
        return value is not None

    async def get(self, room_id: uuid.UUID) -> RoomRecord | None:
        row = await self.pg.run(_fetchrow, f"SELECT {_ROOM_COLS} FROM rooms r WHERE r.id = $1",
                                room_id)
        return _room(row) if row else None

    async def get_by_name(self, name: str) -> RoomRecord | None:
        row = await self.pg.run(
            _fetchrow, f"SELECT {_ROOM_COLS} FROM rooms r WHERE r.name = $1", name)
        return _room(row) if row else None

    async def update(self, room_id: uuid.UUID, **fields: Any) -> bool:
        check_room_fields(fields)
        if not fields:
            return await self.get(room_id) is not None
        names = sorted(fields)
        sets = ", ".join(
            f"{n} = ${i}::jsonb" if n in {"capsule_snapshot", "quiz_scores", "params"}
            else f"{n} = ${i}" for i, n in enumerate(names, start=2))
        values = [_json(fields[n]) if n in {"capsule_snapshot", "quiz_scores", "params"}
                  else fields[n] for n in names]
        value = await self.pg.run(
            _fetchval, f"UPDATE rooms SET {sets} WHERE id = $1 RETURNING 1", room_id, *values)
        return value is not None

    async def delete(self, room_id: uuid.UUID) -> bool:
        return bool(await self.pg.run(_delete_room, room_id))


def _fields(room: RoomRecord) -> dict[str, Any]:
    return attrs.asdict(room, recurse=False)


class PgChat:
    def __init__(self, pg: Postgres) -> None:
        self.pg = pg

    async def append(self, message: ChatMessage) -> None:
        value = await self.pg.run(
            _fetchval,
            "INSERT INTO chat_messages (id, chat_id, room_id, participant_id, display_name,"
            " text, ts) SELECT $1, c.id, $3, $4, $5, $6, $7 FROM chats c"
            " WHERE c.id = $2 OR ($2::uuid IS NULL AND c.room_id = $3)"
            " ORDER BY c.created_at LIMIT 1 RETURNING 1",
            message.id, message.chat_id, message.room_id, message.participant_id,
            message.display_name, message.text, message.ts)
        if value is None:
            raise NotFound(f"no chat for room {message.room_id}")

    async def count(self, room_id: uuid.UUID) -> int:
        return int(await self.pg.run(
            _fetchval, "SELECT count(*) FROM chat_messages WHERE room_id = $1", room_id))

    async def recent(self, room_id: uuid.UUID, limit: int = 50) -> list[ChatMessage]:
        rows = await self.pg.run(
            _fetch, "SELECT * FROM (SELECT id, chat_id, room_id, participant_id, display_name,"
            " text, ts FROM chat_messages WHERE room_id = $1 ORDER BY ts DESC, id DESC"
            " LIMIT $2) m ORDER BY ts, id", room_id, limit)
        return [ChatMessage(id=r[0], chat_id=r[1], room_id=r[2], participant_id=r[3],
                            display_name=r[4], text=r[5], ts=r[6]) for r in rows]

    async def delete_room(self, room_id: uuid.UUID) -> int:
        rows = await self.pg.run(
            _fetch, "DELETE FROM chat_messages WHERE room_id = $1 RETURNING 1", room_id)
        return len(rows)


def pg_repos(pg: Postgres) -> Repos:
    return Repos(lessons=PgLessons(pg), rooms=PgRooms(pg), chat=PgChat(pg))
