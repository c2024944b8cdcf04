"""The embedded store: `EventStore` and the repositories on one SQLite file.

`state_dir/pratico.sqlite`, WAL, `synchronous=FULL`, one connection driven
through `SqliteFile` (worker thread, one call at a time; see sqlite_file.py).
Events are group-committed exactly as on Postgres (`GroupCommitWriter`): one
transaction, hence one fsync, per batch. Times are integer microseconds since
the epoch (exact, and they sort); uuids are their canonical text (which sorts
like the uuid). The schema is versioned with `PRAGMA user_version`; the same
tables as migrations/*.sql, in SQLite's dialect.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio

from pratico_daemon.storage.event_writer import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_DATA_BYTES,
    DEFAULT_QUEUE_SIZE,
    GroupCommitWriter,
    Pending,
    event_of,
    row_of,
)
from pratico_daemon.storage.journal import from_us, to_us
from pratico_daemon.storage.protocols import Conflict, RoomEvent, new_event_id, utcnow
from pratico_daemon.storage.repos import (
    Attendance,
    ChatMessage,
    Lesson,
    NotFound,
    Repos,
    RoomRecord,
    check_room_fields,
)
from pratico_daemon.storage.sqlite_file import SqliteFile, transaction

SCHEMA: list[str] = [
    # version 1
    """
    CREATE TABLE lessons (
        id TEXT PRIMARY KEY, org_id TEXT NOT NULL, teacher_id TEXT NOT NULL,
        title TEXT NOT NULL DEFAULT '', seat_count INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'scheduled'
            CHECK (status IN ('scheduled', 'live', 'ended')),
        started_us INTEGER, ended_us INTEGER, created_us INTEGER NOT NULL);
    CREATE INDEX lessons_teacher_live ON lessons (org_id, teacher_id) WHERE status <> 'ended';
    CREATE TABLE student_attend (
        lesson_id TEXT NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
        student_id TEXT NOT NULL, seat INTEGER NOT NULL CHECK (seat > 0),
        display_name TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (lesson_id, student_id), UNIQUE (lesson_id, seat));
    CREATE TABLE quizzes (
        id TEXT PRIMARY KEY, lesson_id TEXT NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
        title TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT 'open',
        created_us INTEGER NOT NULL, closed_us INTEGER);
    CREATE INDEX quizzes_open ON quizzes (lesson_id) WHERE status = 'open';
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY, lesson_id TEXT NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
        title TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT 'open',
        created_us INTEGER NOT NULL, closed_us INTEGER);
    CREATE INDEX tasks_open ON tasks (lesson_id) WHERE status = 'open';
    CREATE TABLE rooms (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_us INTEGER NOT NULL,
        created_by TEXT NOT NULL, org_id TEXT, capsule_id TEXT, capsule_snapshot TEXT,
        quiz_id TEXT, quiz_scores TEXT NOT NULL DEFAULT '{}',
        params TEXT NOT NULL DEFAULT '{}');
    CREATE TABLE chats (
        id TEXT PRIMARY KEY, created_us INTEGER NOT NULL,
        room_id TEXT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE);
    CREATE INDEX chats_room ON chats (room_id);
    CREATE TABLE chat_messages (
        id TEXT PRIMARY KEY, chat_id TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
        room_id TEXT NOT NULL, participant_id TEXT NOT NULL,
        display_name TEXT NOT NULL DEFAULT '', text TEXT NOT NULL, ts_us INTEGER NOT NULL);
    CREATE INDEX chat_messages_room ON chat_messages (room_id, ts_us, id);
    CREATE TABLE room_events (
        id TEXT PRIMARY KEY, created_us INTEGER NOT NULL, room_id TEXT NOT NULL,
        user_id TEXT, type TEXT NOT NULL, data TEXT NOT NULL DEFAULT '{}');
    CREATE INDEX room_events_room_time ON room_events (room_id, created_us, id);
    CREATE TABLE timeslots (
        id TEXT PRIMARY KEY, series_id TEXT, target_language_code TEXT NOT NULL,
        level TEXT NOT NULL, start_us INTEGER NOT NULL, duration_minutes INTEGER NOT NULL,
        min_participants INTEGER NOT NULL, max_participants INTEGER NOT NULL,
        recurrence TEXT, timezone TEXT NOT NULL DEFAULT 'UTC',
        is_active INTEGER NOT NULL DEFAULT 1, created_by TEXT, created_us INTEGER NOT NULL);
    CREATE INDEX timeslots_start ON timeslots (start_us) WHERE is_active;
    CREATE TABLE registrations (
        id TEXT PRIMARY KEY,
        timeslot_id TEXT NOT NULL REFERENCES timeslots (id) ON DELETE CASCADE,
        user_id TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'registered',
        registered_us INTEGER NOT NULL, cancelled_us INTEGER);
    CREATE UNIQUE INDEX registrations_active ON registrations (timeslot_id, user_id)
        WHERE status = 'registered';
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        timeslot_id TEXT NOT NULL UNIQUE REFERENCES timeslots (id) ON DELETE CASCADE,
        target_language_code TEXT NOT NULL, level TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'waiting', end_reason TEXT, started_us INTEGER,
        ended_us INTEGER, recording_enabled INTEGER NOT NULL DEFAULT 0, recording_url TEXT,
        created_us INTEGER NOT NULL);
    CREATE TABLE participants (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        user_id TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'joined',
        camera_enabled INTEGER NOT NULL DEFAULT 1, mic_enabled INTEGER NOT NULL DEFAULT 1,
        recording_consent INTEGER NOT NULL DEFAULT 0, joined_us INTEGER NOT NULL,
        left_us INTEGER, UNIQUE (session_id, user_id));
    CREATE TABLE outbox (
        id TEXT PRIMARY KEY, topic TEXT NOT NULL, type TEXT NOT NULL,
        payload TEXT NOT NULL DEFAULT '{}', occurred_us INTEGER NOT NULL, published_us INTEGER);
    CREATE INDEX outbox_pending ON outbox (occurred_us, id) WHERE published_us IS NULL;
    """,
]


def migrate_sqlite(conn: sqlite3.Connection) -> int:
    """Bring the file to the latest schema version; returns how many steps ran."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    for number, script in enumerate(SCHEMA[version:], start=version + 1):
        conn.executescript(f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {number}; COMMIT;")
    return len(SCHEMA) - version


def _us(when: Any) -> int | None:
    return None if when is None else to_us(when)


def _t(us: int | None) -> Any:
    return None if us is None else from_us(us)


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _is_unique(exc: sqlite3.IntegrityError) -> bool:
    return "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc)


# Events ----------------------------------------------------------------------


def _insert_events(conn: sqlite3.Connection, rows: Sequence[Any]) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO room_events (id, created_us, room_id, user_id, type, data)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [(str(i), to_us(c), r, u, t, d) for i, c, r, u, t, d in rows])


def _read_events(conn: sqlite3.Connection, room_id: str, after: uuid.UUID | None,
                 limit: int) -> list[RoomEvent]:
    if after is None:
        cur = conn.execute(
            "SELECT id, created_us, room_id, user_id, type, data FROM room_events"
            " WHERE room_id = ? ORDER BY created_us, id LIMIT ?", (room_id, limit))
    else:
        found = conn.execute("SELECT created_us FROM room_events WHERE id = ?",
                             (str(after),)).fetchone()
        since = found[0] if found else ((after.int >> 80) * 1000)
        cur = conn.execute(
            "SELECT id, created_us, room_id, user_id, type, data FROM room_events"
            " WHERE room_id = ? AND (created_us > ? OR (created_us = ? AND id > ?))"
            " ORDER BY created_us, id LIMIT ?", (room_id, since, since, str(after), limit))
    return [event_of((uuid.UUID(i), from_us(c), r, u, t, d)) for i, c, r, u, t, d in cur]


class EmbeddedEventStore:
    """`EventStore` on the SQLite file, group-committed."""

    def __init__(self, db: SqliteFile, *, services: Any = None,
                 max_batch: int = DEFAULT_MAX_BATCH, queue_size: int = DEFAULT_QUEUE_SIZE,
                 max_data_bytes: int = DEFAULT_MAX_DATA_BYTES) -> None:
        self.db = db
        self.writer = GroupCommitWriter(
            self._commit, metrics=getattr(services, "metrics", None), max_batch=max_batch,
            queue_size=queue_size, max_data_bytes=max_data_bytes)

    def __repr__(self) -> str:
        return f"<EmbeddedEventStore {self.db.path} {self.writer!r}>"

    async def _commit(self, batch: Sequence[Pending]) -> None:
        rows = [row_of(p) for p in batch]
        await self.db.call(transaction, _insert_events, rows)

    async def append_durable(self, event: RoomEvent) -> None:
        await self.writer.append_durable(event)

    async def read(self, room_id: str, *, after: uuid.UUID | None = None,
                   limit: int = 100) -> list[RoomEvent]:
        return await self.db.call(_read_events, room_id, after, max(0, min(limit, 10_000)))

    async def flush(self) -> None:
        await self.writer.flush()


# Lessons ---------------------------------------------------------------------

_LESSON = ("SELECT id, org_id, teacher_id, title, seat_count, status, started_us, ended_us,"
           " created_us FROM lessons WHERE id = ?")


def _lesson(row: Any) -> Lesson:
    i, org, teacher, title, seats, status, started, ended, created = row
    return Lesson(id=i, org_id=org, teacher_id=teacher, title=title, seat_count=seats,
                  status=status, started_at=_t(started), ended_at=_t(ended),
                  created_at=from_us(created))


def _create_lesson(conn: sqlite3.Connection, lesson: Lesson) -> None:
    conn.execute(
        "INSERT INTO lessons (id, org_id, teacher_id, title, seat_count, status, started_us,"
        " ended_us, created_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (lesson.id, lesson.org_id, lesson.teacher_id, lesson.title, lesson.seat_count,
         lesson.status, _us(lesson.started_at), _us(lesson.ended_at), to_us(lesson.created_at)))


def _set_attendance(conn: sqlite3.Connection, lesson_id: str, student_id: str, seat: int,
                    display_name: str | None) -> Any:
    if conn.execute("SELECT 1 FROM lessons WHERE id = ?", (lesson_id,)).fetchone() is None:
        return None
    conn.execute(
        "INSERT INTO student_attend (lesson_id, student_id, seat, display_name)"
        " VALUES (?, ?, ?, COALESCE(?, '')) ON CONFLICT (lesson_id, student_id) DO UPDATE"
        " SET seat = excluded.seat, display_name = COALESCE(?, student_attend.display_name)",
        (lesson_id, student_id, seat, display_name, display_name))
    return conn.execute(
        "SELECT lesson_id, student_id, seat, display_name FROM student_attend"
        " WHERE lesson_id = ? AND student_id = ?", (lesson_id, student_id)).fetchone()


def _end_lesson(conn: sqlite3.Connection, lesson_id: str, at_us: int) -> bool:
    won = conn.execute("UPDATE lessons SET status = 'ended', ended_us = ?"
                       " WHERE id = ? AND status <> 'ended'", (at_us, lesson_id)).rowcount == 1
    if won:
        for table in ("quizzes", "tasks"):
            conn.execute(f"UPDATE {table} SET status = 'closed', closed_us = ?"
                         " WHERE lesson_id = ? AND status = 'open'", (at_us, lesson_id))
    return won


class SqlLessons:
    def __init__(self, db: SqliteFile) -> None:
        self.db = db

    async def _q(self, sql: str, *args: Any) -> list[Any]:
        return await self.db.call(lambda c: c.execute(sql, args).fetchall())

    async def create(self, lesson: Lesson) -> Lesson:
        try:
            await self.db.call(_create_lesson, lesson)
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"lesson {lesson.id} exists") from exc
        return lesson

    async def get(self, lesson_id: str) -> Lesson | None:
        rows = await self._q(_LESSON, lesson_id)
        return _lesson(rows[0]) if rows else None

    async def set_attendance(self, lesson_id: str, student_id: str, seat: int,
                             display_name: str | None = None) -> Attendance:
        try:
            row = await self.db.call(transaction, _set_attendance, lesson_id, student_id, seat,
                                     display_name)
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"seat {seat} of lesson {lesson_id} is taken") from exc
        if row is None:
            raise NotFound(f"lesson {lesson_id}")
        return Attendance(*row)

    async def set_display_name(self, lesson_id: str, student_id: str,
                               display_name: str) -> bool:
        def update(conn: sqlite3.Connection) -> bool:
            return conn.execute(
                "UPDATE student_attend SET display_name = ? WHERE lesson_id = ?"
                " AND student_id = ?", (display_name, lesson_id, student_id)).rowcount == 1

        return await self.db.call(update)

    async def seat_of(self, lesson_id: str, student_id: str) -> int | None:
        rows = await self._q("SELECT seat FROM student_attend WHERE lesson_id = ?"
                             " AND student_id = ?", lesson_id, student_id)
        return rows[0][0] if rows else None

    async def attendance(self, lesson_id: str) -> list[Attendance]:
        rows = await self._q("SELECT lesson_id, student_id, seat, display_name FROM"
                             " student_attend WHERE lesson_id = ? ORDER BY seat", lesson_id)
        return [Attendance(*r) for r in rows]

    async def start(self, lesson_id: str, at: Any = None) -> bool:
        def update(conn: sqlite3.Connection) -> bool:
            return conn.execute(
                "UPDATE lessons SET status = 'live', started_us = ? WHERE id = ?"
                " AND status = 'scheduled'", (to_us(at or utcnow()), lesson_id)).rowcount == 1

        return await self.db.call(update)

    async def end(self, lesson_id: str, at: Any = None) -> bool:
        return await self.db.call(transaction, _end_lesson, lesson_id, to_us(at or utcnow()))

    async def live_lessons_of(self, org_id: str, teacher_id: str) -> list[str]:
        rows = await self._q("SELECT id FROM lessons WHERE org_id = ? AND teacher_id = ?"
                             " AND status <> 'ended' ORDER BY created_us", org_id, teacher_id)
        return [r[0] for r in rows]

    async def add_quiz(self, lesson_id: str, quiz_id: str | None = None,
                       title: str = "") -> str:
        return await self._add("quizzes", lesson_id, quiz_id, title)

    async def add_task(self, lesson_id: str, task_id: str | None = None,
                       title: str = "") -> str:
        return await self._add("tasks", lesson_id, task_id, title)

    async def _add(self, table: str, lesson_id: str, item_id: str | None, title: str) -> str:
        item_id = item_id or str(new_event_id())

        def insert(conn: sqlite3.Connection) -> bool:
            return conn.execute(
                f"INSERT INTO {table} (id, lesson_id, title, created_us) SELECT ?, id, ?, ?"
                " FROM lessons WHERE id = ?",
                (item_id, title, to_us(utcnow()), lesson_id)).rowcount == 1

        try:
            inserted = await self.db.call(insert)
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"{table} {item_id} exists") from exc
        if not inserted:
            raise NotFound(f"lesson {lesson_id}")
        return item_id

    async def open_items(self, lesson_id: str) -> tuple[int, int]:
        rows = await self._q(
            "SELECT (SELECT count(*) FROM quizzes WHERE lesson_id = ?1 AND status = 'open'),"
            " (SELECT count(*) FROM tasks WHERE lesson_id = ?1 AND status = 'open')", lesson_id)
        return int(rows[0][0]), int(rows[0][1])


# Rooms and chat --------------------------------------------------------------

_ROOM = ("SELECT r.id, r.name, r.created_by, r.org_id, r.capsule_id, r.capsule_snapshot,"
         " r.quiz_id, r.quiz_scores, r.params, r.created_us,"
         " (SELECT c.id FROM chats c WHERE c.room_id = r.id ORDER BY c.created_us LIMIT 1)"
         " FROM rooms r")
_ROOM_JSON = {"capsule_snapshot", "quiz_scores", "params"}


def _room(row: Any) -> RoomRecord:
    i, name, by, org, capsule, snapshot, quiz, scores, params, created, chat = row
    return RoomRecord(
        id=uuid.UUID(i), name=name, created_by=by, org_id=org, capsule_id=capsule,
        capsule_snapshot=None if snapshot is None else orjson.loads(snapshot), quiz_id=quiz,
        quiz_scores=orjson.loads(scores), params=orjson.loads(params),
        created_at=from_us(created), chat_id=uuid.UUID(chat) if chat else None)


def _create_room(conn: sqlite3.Connection, room: RoomRecord, chat_id: uuid.UUID) -> None:
    conn.execute(
        "INSERT INTO rooms (id, name, created_us, created_by, org_id, capsule_id,"
        " capsule_snapshot, quiz_id, quiz_scores, params) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (str(room.id), room.name, to_us(room.created_at), room.created_by, room.org_id,
         room.capsule_id, _json(room.capsule_snapshot), room.quiz_id,
         _json(dict(room.quiz_scores)), _json(dict(room.params))))
    conn.execute("INSERT INTO chats (id, created_us, room_id) VALUES (?, ?, ?)",
                 (str(chat_id), to_us(room.created_at), str(room.id)))


def _delete_room(conn: sqlite3.Connection, room_id: str) -> bool:
    conn.execute("DELETE FROM chat_messages WHERE room_id = ?", (room_id,))
    conn.execute("DELETE FROM chats WHERE room_id = ?", (room_id,))
    return conn.execute("DELETE FROM rooms WHERE id = ?", (room_id,)).rowcount == 1


class SqlRooms:
    def __init__(self, db: SqliteFile) -> None:
        self.db = db

    async def create(self, room: RoomRecord) -> RoomRecord:
        chat_id = new_event_id()
        try:
            await self.db.call(transaction, _create_room, room, chat_id)
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"room name {room.name!r} is taken") from exc
        return attrs.evolve(room, chat_id=chat_id)

    async def rename(self, room_id: uuid.UUID, name: str) -> bool:
        def update(conn: sqlite3.Connection) -> bool:
            return conn.execute("UPDATE rooms SET name = ? WHERE id = ?",
                                (name, str(room_id))).rowcount == 1

        try:
            return await self.db.call(update)
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"room name {name!r} is taken") from exc

    async def _one(self, where: str, value: str) -> RoomRecord | None:
        rows = await self.db.call(
            lambda c: c.execute(f"{_ROOM} WHERE {where} = ?", (value,)).fetchall())
        return _room(rows[0]) if rows else None

    async def get(self, room_id: uuid.UUID) -> RoomRecord | None:
        return await self._one("r.id", str(room_id))

    async def get_by_name(self, name: str) -> RoomRecord | None:
        return await self._one("r.name", name)

    async def update(self, room_id: uuid.UUID, **fields: Any) -> bool:
        check_room_fields(fields)
        if not fields:
            return await self.get(room_id) is not None
        names = sorted(fields)
        sets = ", ".join(f"{n} = ?" for n in names)
        values = [_json(fields[n]) if n in _ROOM_JSON else fields[n] for n in names]

        def update(conn: sqlite3.Connection) -> bool:
            return conn.execute(f"UPDATE rooms SET {sets} WHERE id = ?",
                                (*values, str(room_id))).rowcount == 1

        return await self.db.call(update)

    async def delete(self, room_id: uuid.UUID) -> bool:
        return await self.db.call(transaction, _delete_room, str(room_id))


def _append_chat(conn: sqlite3.Connection, m: ChatMessage) -> bool:
    return conn.execute(
        "INSERT INTO chat_messages (id, chat_id, room_id, participant_id, display_name, text,"
        " ts_us) SELECT ?, c.id, ?, ?, ?, ?, ? FROM chats c"
        " WHERE c.id = ? OR (? IS NULL AND c.room_id = ?) ORDER BY c.created_us LIMIT 1",
        (str(m.id), str(m.room_id), m.participant_id, m.display_name, m.text, to_us(m.ts),
         str(m.chat_id) if m.chat_id else None, str(m.chat_id) if m.chat_id else None,
         str(m.room_id))).rowcount == 1


class SqlChat:
    def __init__(self, db: SqliteFile) -> None:
        self.db = db

    async def append(self, message: ChatMessage) -> None:
        if not await self.db.call(_append_chat, message):
            raise NotFound(f"no chat for room {message.room_id}")

    async def count(self, room_id: uuid.UUID) -> int:
        rows = await self.db.call(lambda c: c.execute(
            "SELECT count(*) FROM chat_messages WHERE room_id = ?", (str(room_id),)).fetchall())
        return int(rows[0][0])

    async def recent(self, room_id: uuid.UUID, limit: int = 50) -> list[ChatMessage]:
        rows = await self.db.call(lambda c: c.execute(
            "SELECT * FROM (SELECT id, chat_id, room_id, participant_id, display_name, text,"
            " ts_us FROM chat_messages WHERE room_id = ? ORDER BY ts_us DESC, id DESC LIMIT ?)"
            " ORDER BY ts_us, id", (str(room_id), limit)).fetchall())
        return [ChatMessage(id=uuid.UUID(i), chat_id=uuid.UUID(c), room_id=uuid.UUID(r),
                            participant_id=p, display_name=d, text=t, ts=from_us(ts))
                for i, c, r, p, d, t, ts in rows]

    async def delete_room(self, room_id: uuid.UUID) -> int:
        return await self.db.call(lambda c: c.execute(
            "DELETE FROM chat_messages WHERE room_id = ?", (str(room_id),)).rowcount)


# The whole embedded store ----------------------------------------------------


@attrs.define
class EmbeddedSql:
    """What `open_embedded_sql` yields: the file, its event store and repositories."""

    db: SqliteFile
    events: EmbeddedEventStore
    repos: Repos


@asynccontextmanager
async def open_embedded_sql(path: Path, *, services: Any = None,
                            **options: Any) -> AsyncIterator[EmbeddedSql]:
    """Open (and migrate) the SQLite file, run its event writer; flush and close on exit."""
    db = await SqliteFile.open(path, synchronous="FULL")
    try:
        await db.call(migrate_sqlite)
        events = EmbeddedEventStore(db, services=services, **options)
        repos = Repos(lessons=SqlLessons(db), rooms=SqlRooms(db), chat=SqlChat(db))
        async with trio.open_nursery() as nursery:
            await nursery.start(events.writer.run)
            try:
                yield EmbeddedSql(db, events, repos)
                with trio.move_on_after(10):
                    await events.flush()
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await db.close()
