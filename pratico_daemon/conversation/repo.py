"""The conversation repository: the seed's ERD tables and the outbox, one SQL body.

Every method is one transaction (`db.Database.transaction`), written once for
PostgreSQL and SQLite. The database is the authority for admission and the
session lifecycle: a join, a leave, a timer firing each lock the session row
(`FOR UPDATE`), decide with `lifecycle`, and write the domain events to the
`outbox` in the same transaction, so an event exists exactly when its change
does (the outbox relay publishes it later). The session's Room actor mirrors
the result for the clients.

AppErrors raised inside a unit roll it back and reach the caller unchanged.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import attrs
import orjson

from pratico_daemon.conversation import lifecycle
from pratico_daemon.conversation.db import Database, Row, Tx, as_datetime, iso
from pratico_daemon.conversation.lifecycle import SessionStatus, Transition, Trigger
from pratico_daemon.errors import AppError

TOPIC = "conversation.events"
# Slots last at most a day (slots.MAX_DURATION_MINUTES): how far back a query
# looks for a slot that may still be running.
LOOKBACK = dt.timedelta(days=1)

_id_lock = threading.Lock()
_last_id = [0, 0]  # [ms, counter]


def new_id() -> str:
    """A UUIDv7 that is monotonic within this process (RFC 9562 §6.2, method 1).

    Outbox rows written in one transaction share `occurred_at`; their ids keep
    them in the order they were written.
    """
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_id[0]:
            ms, counter = _last_id[0], _last_id[1] + 1
        else:
            counter = int.from_bytes(os.urandom(1), "big")
        _last_id[0], _last_id[1] = ms, counter
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (counter & 0xFFF) << 64
    value |= 0b10 << 62
    value |= int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


@attrs.frozen
class OutboxEvent:
    id: str
    topic: str
    type: str
    payload: dict[str, Any]
    occurred_at: dt.datetime

    def fields(self) -> dict[str, str]:
        """The bus entry (PROTOCOL.md §4: type, id, occurredAt, payload as JSON)."""
        return {"type": self.type, "id": self.id, "occurredAt": iso(self.occurred_at) or "",
                "payload": orjson.dumps(self.payload).decode()}


@attrs.frozen
class ParticipantView:
    user_id: str
    camera: bool = True
    mic: bool = True
    consent: bool = False
    recorder: bool = False

    def wire(self) -> dict[str, Any]:
        return {"userId": self.user_id, "cameraEnabled": self.camera, "micEnabled": self.mic}


@attrs.frozen
class SessionInfo:
    id: str
    slot_id: str
    status: SessionStatus
    start: dt.datetime
    end: dt.datetime
    min_participants: int
    max_participants: int
    participants: tuple[ParticipantView, ...] = ()


@attrs.frozen
class Change:
    """What a unit did to a live session, for the Room mirror."""

    session: SessionInfo
    user_id: str | None = None
    transition: Transition | None = None
    participant: ParticipantView | None = None


def _participant(row: Row) -> ParticipantView:
    return ParticipantView(row["user_id"], bool(row["camera_enabled"]), bool(row["mic_enabled"]),
                           bool(row["recording_consent"]), bool(row["is_recorder"]))


async def _outbox(tx: Tx, now: dt.datetime, type_: str, payload: dict[str, Any]) -> None:
    await tx.execute(
        "INSERT INTO outbox (id, topic, type, payload, occurred_at) "
        "VALUES ($1, $2, $3, $4::jsonb, $5)",
        new_id(), TOPIC, type_, orjson.dumps(payload).decode(), now)


_SESSION_COLS = ("s.id, s.timeslot_id, s.status, t.start_time, t.duration_minutes, "
                 "t.min_participants, t.max_participants")


async def _session(tx: Tx, where: str, *args: Any, lock: bool = False) -> SessionInfo | None:
    row = await tx.fetchrow(
        f"SELECT {_SESSION_COLS} FROM sessions s JOIN timeslots t ON t.id = s.timeslot_id "
        f"WHERE {where}{' FOR UPDATE OF s' if lock else ''}", *args)
    if row is None:
        return None
    joined = await tx.fetch(
        "SELECT * FROM participants WHERE session_id = $1 AND status = 'joined' "
        "ORDER BY joined_at, id",
        row["id"])
    return _session_info(row, [_participant(p) for p in joined])


def _session_info(row: Row, joined: list[ParticipantView]) -> SessionInfo:
    start = as_datetime(row["start_time"])
    assert start is not None
    return SessionInfo(
        row["id"], row["timeslot_id"], SessionStatus(row["status"]), start,
        start + dt.timedelta(minutes=row["duration_minutes"]), row["min_participants"],
        row["max_participants"], tuple(joined))


def _occupancy(session: SessionInfo) -> int:
    return sum(1 for p in session.participants if not p.recorder)


async def _apply(tx: Tx, session: SessionInfo, transition: Transition,
                 now: dt.datetime) -> SessionInfo:
    if transition.target is SessionStatus.ACTIVE:
        await tx.execute("UPDATE sessions SET status = 'active', started_at = $2 WHERE id = $1",
                         session.id, now)
        await _outbox(tx, now, "session.started", {
            "sessionId": session.id, "timeSlotId": session.slot_id, "startedAt": iso(now),
            "participants": [p.user_id for p in session.participants if not p.recorder]})
    elif transition.target is SessionStatus.ENDED:
        reason = transition.reason.value if transition.reason else None
        took_part = await tx.fetch(
            "SELECT user_id FROM participants WHERE session_id = $1 AND NOT is_recorder "
            "ORDER BY joined_at, id", session.id)
        await tx.execute(
            "UPDATE sessions SET status = 'ended', ended_at = $2, end_reason = $3 WHERE id = $1",
            session.id, now, reason)
        await tx.execute(
            "UPDATE participants SET status = 'left', left_at = $2 "
            "WHERE session_id = $1 AND status = 'joined'", session.id, now)
        await _outbox(tx, now, "session.ended", {
            "sessionId": session.id, "timeSlotId": session.slot_id, "reason": reason,
            "endedAt": iso(now), "participants": [r["user_id"] for r in took_part]})
    return attrs.evolve(session, status=transition.target)


async def _leave(tx: Tx, session_id: str, user_id: str, now: dt.datetime) -> Change | None:
    session = await _session(tx, "s.id = $1", session_id, lock=True)
    if session is None or session.status is SessionStatus.ENDED:
        return None
    if not any(p.user_id == user_id for p in session.participants):
        return None
    await tx.execute(
        "UPDATE participants SET status = 'left', left_at = $3 "
        "WHERE session_id = $1 AND user_id = $2", session_id, user_id, now)
    await _outbox(tx, now, "participant.left", {"sessionId": session_id, "userId": user_id})
    session = attrs.evolve(
        session, participants=tuple(p for p in session.participants if p.user_id != user_id))
    transition = lifecycle.after_leave(session.status, _occupancy(session))
    if transition is not None:
        session = await _apply(tx, session, transition, now)
    return Change(session, user_id, transition)


def slot_view(row: Row, *, registered_count: int = 0, registered: bool = False) -> dict[str, Any]:
    return {
        "id": row["id"], "seriesId": row["series_id"],
        "targetLanguageCode": row["target_language_code"], "level": row["level"],
        "startTime": iso(as_datetime(row["start_time"])),
        "durationMinutes": row["duration_minutes"],
        "minParticipants": row["min_participants"], "maxParticipants": row["max_participants"],
        "timezone": row["timezone"], "recurrence": row["recurrence"],
        "registeredCount": registered_count,
        "placesLeft": max(0, row["max_participants"] - registered_count),
        "registered": registered,
    }


@attrs.frozen
class NewSlot:
    id: str
    start: dt.datetime
    language: str
    level: str
    duration_minutes: int
    min_participants: int
    max_participants: int
    timezone: str
    recurrence: str | None = None
    series_id: str | None = None
    created_by: str | None = None


@attrs.frozen
class NewSeries:
    id: str
    rrule: str
    timezone: str
    local_start: str
    language: str
    level: str
    duration_minutes: int
    min_participants: int
    max_participants: int
    created_by: str | None
    expanded_until: dt.datetime
    finished: bool


async def _insert_slots(tx: Tx, slots: Sequence[NewSlot], now: dt.datetime) -> None:
    for s in slots:
        await tx.execute(
            "INSERT INTO timeslots (id, series_id, target_language_code, level, start_time, "
            "duration_minutes, min_participants, max_participants, recurrence, timezone, "
            "created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            s.id, s.series_id, s.language, s.level, s.start, s.duration_minutes,
            s.min_participants, s.max_participants, s.recurrence, s.timezone, s.created_by, now)


class ConversationRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def __repr__(self) -> str:
        return f"<ConversationRepo {self.db!r}>"

    # -- slots ------------------------------------------------------------------------------

    async def create_slots(self, slots: Sequence[NewSlot], series: NewSeries | None,
                           now: dt.datetime) -> list[dict[str, Any]]:
        async def unit(tx: Tx) -> list[dict[str, Any]]:
            if series is not None:
                await tx.execute(
                    "INSERT INTO timeslot_series (id, rrule, timezone, local_start, "
                    "target_language_code, level, duration_minutes, min_participants, "
                    "max_participants, created_by, expanded_until, finished, created_at) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    series.id, series.rrule, series.timezone, series.local_start,
                    series.language, series.level, series.duration_minutes,
                    series.min_participants, series.max_participants, series.created_by,
                    series.expanded_until, series.finished, now)
            await _insert_slots(tx, slots, now)
            rows = [await tx.fetchrow("SELECT * FROM timeslots WHERE id = $1", s.id) for s in slots]
            return [slot_view(r) for r in rows if r is not None]

        return await self.db.transaction(unit)

    async def series_due(self, until: dt.datetime) -> list[Row]:
        async def unit(tx: Tx) -> list[Row]:
            return await tx.fetch(
                "SELECT * FROM timeslot_series WHERE NOT finished AND expanded_until < $1", until)

        return await self.db.transaction(unit)

    async def extend_series(self, series_id: str, slots: Sequence[NewSlot],
                            expanded_until: dt.datetime, finished: bool, now: dt.datetime) -> int:
        async def unit(tx: Tx) -> int:
            row = await tx.fetchrow(
                "SELECT expanded_until FROM timeslot_series WHERE id = $1 FOR UPDATE", series_id)
            if row is None:
                return 0
            done = as_datetime(row["expanded_until"])
            fresh = [s for s in slots if done is None or s.start > done]
            await _insert_slots(tx, fresh, now)
            await tx.execute(
                "UPDATE timeslot_series SET expanded_until = $2, finished = $3 WHERE id = $1",
                series_id, expanded_until, finished)
            return len(fresh)

        return await self.db.transaction(unit)

    async def list_slots(self, *, language: str | None, level: str | None, start: dt.datetime,
                         end: dt.datetime | None, user_id: str, limit: int,
                         after: tuple[dt.datetime, str] | None) -> list[dict[str, Any]]:
        async def unit(tx: Tx) -> list[dict[str, Any]]:
            rows = await tx.fetch(
                "SELECT t.*, (SELECT count(*) FROM registrations r WHERE r.timeslot_id = t.id "
                " AND r.status = 'registered') AS registered_count, "
                " EXISTS (SELECT 1 FROM registrations r WHERE r.timeslot_id = t.id "
                " AND r.user_id = $1 AND r.status = 'registered') AS registered "
                "FROM timeslots t WHERE t.is_active "
                "AND ($2::text IS NULL OR lower(t.target_language_code) = lower($2::text)) "
                "AND ($3::text IS NULL OR t.level = $3::text) "
                "AND t.start_time >= $4 AND ($5::timestamptz IS NULL OR t.start_time <= $5) "
                "AND ($6::timestamptz IS NULL OR t.start_time > $6 "
                "     OR (t.start_time = $6 AND t.id > $7::uuid)) "
                "ORDER BY t.start_time, t.id LIMIT $8",
                user_id, language, level, start, end,
                after[0] if after else None, after[1] if after else None, limit)
            return [slot_view(r, registered_count=int(r["registered_count"]),
                              registered=bool(r["registered"])) for r in rows]

        return await self.db.transaction(unit)

    # -- registrations ----------------------------------------------------------------------

    async def register(self, slot_id: str, user_id: str, now: dt.datetime) -> bool:
        """Register (idempotent: False when already registered)."""

        async def unit(tx: Tx) -> bool:
            slot = await tx.fetchrow(
                "SELECT * FROM timeslots WHERE id = $1 AND is_active FOR UPDATE", slot_id)
            if slot is None:
                raise AppError("not_found", "no such time slot")
            mine = await tx.fetchrow(
                "SELECT id FROM registrations WHERE timeslot_id = $1 AND user_id = $2 "
                "AND status = 'registered'", slot_id, user_id)
            if mine is not None:
                return False
            start = as_datetime(slot["start_time"])
            assert start is not None
            if now >= start + dt.timedelta(minutes=slot["duration_minutes"]):
                raise AppError("session_ended", "this time slot is over")
            count = await tx.fetchrow(
                "SELECT count(*) AS n FROM registrations WHERE timeslot_id = $1 "
                "AND status = 'registered'", slot_id)
            assert count is not None
            if int(count["n"]) >= slot["max_participants"]:
                raise AppError("room_full", "this time slot is full",
                               maxParticipants=slot["max_participants"])
            await tx.execute(
                "INSERT INTO registrations (id, timeslot_id, user_id, status, registered_at) "
                "VALUES ($1, $2, $3, 'registered', $4)", new_id(), slot_id, user_id, now)
            await _outbox(tx, now, "registration.created",
                          {"timeSlotId": slot_id, "userId": user_id})
            return True

        return await self.db.transaction(unit)

    async def cancel(self, slot_id: str, user_id: str, now: dt.datetime,
                     reason: str = "cancelled") -> tuple[bool, Change | None]:
        """Cancel (idempotent); a participant of the slot's live session leaves it."""

        async def unit(tx: Tx) -> tuple[bool, Change | None]:
            return await _cancel(tx, slot_id, user_id, now, reason)

        return await self.db.transaction(unit)

    async def delete_user(self, user_id: str, now: dt.datetime) -> list[Change]:
        """`user.deleted`: every registration cancelled, every live session left."""

        async def unit(tx: Tx) -> list[Change]:
            changes = []
            slots = await tx.fetch(
                "SELECT timeslot_id FROM registrations WHERE user_id = $1 "
                "AND status = 'registered'", user_id)
            for row in slots:
                _, change = await _cancel(tx, row["timeslot_id"], user_id, now, "user_deleted")
                if change is not None:
                    changes.append(change)
            live = await tx.fetch(
                "SELECT p.session_id FROM participants p JOIN sessions s ON s.id = p.session_id "
                "WHERE p.user_id = $1 AND p.status = 'joined' AND s.status <> 'ended'", user_id)
            for row in live:
                change = await _leave(tx, row["session_id"], user_id, now)
                if change is not None:
                    changes.append(change)
            return changes

        return await self.db.transaction(unit)

    async def registered_users(self, slot_id: str) -> list[str]:
        async def unit(tx: Tx) -> list[str]:
            rows = await tx.fetch(
                "SELECT user_id FROM registrations WHERE timeslot_id = $1 "
                "AND status = 'registered' ORDER BY registered_at, id", slot_id)
            return [r["user_id"] for r in rows]

        return await self.db.transaction(unit)

    # -- sessions ---------------------------------------------------------------------------

    async def ensure_session(self, slot_id: str, now: dt.datetime) -> SessionInfo | None:
        """The slot's session, created WAITING if it does not exist (None: slot gone)."""

        async def unit(tx: Tx) -> SessionInfo | None:
            return await _ensure_session(tx, slot_id, now)

        return await self.db.transaction(unit)

    async def join(self, slot_id: str, user_id: str, consent: bool,
                   now: dt.datetime) -> Change:
        async def unit(tx: Tx) -> Change:
            slot = await tx.fetchrow("SELECT * FROM timeslots WHERE id = $1 AND is_active", slot_id)
            if slot is None:
                raise AppError("not_found", "no such time slot")
            reg = await tx.fetchrow(
                "SELECT id FROM registrations WHERE timeslot_id = $1 AND user_id = $2 "
                "AND status = 'registered'", slot_id, user_id)
            if reg is None:
                raise AppError("forbidden", "register for this time slot first")
            start = as_datetime(slot["start_time"])
            assert start is not None
            if now < start:
                raise AppError("not_started", "the time slot has not started",
                               startTime=iso(start))
            if now >= start + dt.timedelta(minutes=slot["duration_minutes"]):
                raise AppError("session_ended", "the time slot is over")
            session = await _ensure_session(tx, slot_id, now, lock=True)
            assert session is not None
            if session.status is SessionStatus.ENDED:
                raise AppError("session_ended", "the session has ended", sessionId=session.id)
            other = await tx.fetchrow(
                "SELECT p.session_id FROM participants p JOIN sessions s ON s.id = p.session_id "
                "WHERE p.user_id = $1 AND p.status = 'joined' AND s.status <> 'ended' "
                "AND s.id <> $2", user_id, session.id)
            if other is not None:
                raise AppError("conflict", "you are already in another live session",
                               sessionId=other["session_id"])
            already = next((p for p in session.participants if p.user_id == user_id), None)
            if already is not None:
                return Change(session, user_id, None, already)
            if _occupancy(session) >= session.max_participants:
                raise AppError("room_full", "the session is full",
                               maxParticipants=session.max_participants)
            row = await tx.fetchrow(
                "SELECT id FROM participants WHERE session_id = $1 AND user_id = $2",
                session.id, user_id)
            if row is None:
                await tx.execute(
                    "INSERT INTO participants (id, session_id, user_id, status, "
                    "recording_consent, joined_at) VALUES ($1, $2, $3, 'joined', $4, $5)",
                    new_id(), session.id, user_id, consent, now)
            else:
                await tx.execute(
                    "UPDATE participants SET status = 'joined', left_at = NULL, "
                    "recording_consent = $2 WHERE id = $1", row["id"], consent)
            if consent:
                await tx.execute("UPDATE sessions SET recording_enabled = true WHERE id = $1",
                                 session.id)
            me = ParticipantView(user_id, True, True, consent, False)
            await _outbox(tx, now, "participant.joined",
                          {"sessionId": session.id, "userId": user_id,
                           "recordingConsent": consent})
            session = attrs.evolve(session, participants=(*session.participants, me))
            transition = lifecycle.after_join(
                session.status, _occupancy(session), session.min_participants)
            if transition is not None:
                session = await _apply(tx, session, transition, now)
            return Change(session, user_id, transition, me)

        return await self.db.transaction(unit)

    async def join_recorder(self, session_id: str, recorder_id: str,
                            now: dt.datetime) -> Change:
        """A recorder enters a live session (issue 8): outside occupancy, cap and minimum."""

        async def unit(tx: Tx) -> Change:
            session = await _session(tx, "s.id = $1", session_id, lock=True)
            if session is None:
                raise AppError("not_found", "no such session")
            if session.status is SessionStatus.ENDED:
                raise AppError("session_ended", "the session has ended")
            view = ParticipantView(recorder_id, False, False, False, True)
            await tx.execute(
                "INSERT INTO participants (id, session_id, user_id, status, camera_enabled, "
                "mic_enabled, is_recorder, joined_at) VALUES ($1, $2, $3, 'joined', false, "
                "false, true, $4) ON CONFLICT (session_id, user_id) DO UPDATE SET "
                "status = 'joined', left_at = NULL", new_id(), session_id, recorder_id, now)
            return Change(attrs.evolve(session, participants=(*session.participants, view)),
                          recorder_id, None, view)

        return await self.db.transaction(unit)

    async def leave(self, session_id: str, user_id: str, now: dt.datetime) -> Change | None:
        async def unit(tx: Tx) -> Change | None:
            return await _leave(tx, session_id, user_id, now)

        return await self.db.transaction(unit)

    async def set_media(self, user_id: str, camera: bool | None, mic: bool | None,
                        consent: bool | None) -> tuple[str, ParticipantView]:
        async def unit(tx: Tx) -> tuple[str, ParticipantView]:
            row = await tx.fetchrow(
                "SELECT p.* FROM participants p JOIN sessions s ON s.id = p.session_id "
                "WHERE p.user_id = $1 AND p.status = 'joined' AND s.status <> 'ended' "
                "FOR UPDATE OF p", user_id)
            if row is None:
                raise AppError("not_found", "you are not in a live session")
            await tx.execute(
                "UPDATE participants SET camera_enabled = COALESCE($2, camera_enabled), "
                "mic_enabled = COALESCE($3, mic_enabled), "
                "recording_consent = COALESCE($4, recording_consent) WHERE id = $1",
                row["id"], camera, mic, consent)
            if consent:
                await tx.execute("UPDATE sessions SET recording_enabled = true WHERE id = $1",
                                 row["session_id"])
            fresh = await tx.fetchrow("SELECT * FROM participants WHERE id = $1", row["id"])
            assert fresh is not None
            return row["session_id"], _participant(fresh)

        return await self.db.transaction(unit)

    async def end_session(self, session_id: str, trigger: Trigger,
                          now: dt.datetime) -> Change | None:
        """Fire a timer trigger; None when it changes nothing (already ended, or a no-op)."""

        async def unit(tx: Tx) -> Change | None:
            session = await _session(tx, "s.id = $1", session_id, lock=True)
            if session is None:
                return None
            transition = lifecycle.fire(session.status, trigger)
            if transition is None:
                return None
            return Change(await _apply(tx, session, transition, now), None, transition)

        return await self.db.transaction(unit)

    async def session_view(self, session_id: str) -> dict[str, Any] | None:
        async def unit(tx: Tx) -> dict[str, Any] | None:
            row = await tx.fetchrow("SELECT * FROM sessions WHERE id = $1", session_id)
            if row is None:
                return None
            people = await tx.fetch(
                "SELECT * FROM participants WHERE session_id = $1 AND NOT is_recorder "
                "ORDER BY joined_at, id", session_id)
            return {
                "sessionId": row["id"], "timeSlotId": row["timeslot_id"],
                "status": row["status"], "endReason": row["end_reason"],
                "startedAt": iso(as_datetime(row["started_at"])),
                "endedAt": iso(as_datetime(row["ended_at"])),
                "recordingEnabled": bool(row["recording_enabled"]),
                "recordingUrl": row["recording_url"],
                "participants": [
                    {**_participant(p).wire(), "status": p["status"],
                     "joinedAt": iso(as_datetime(p["joined_at"])),
                     "leftAt": iso(as_datetime(p["left_at"]))} for p in people],
            }

        return await self.db.transaction(unit)

    async def live_sessions(self) -> list[SessionInfo]:
        async def unit(tx: Tx) -> list[SessionInfo]:
            # Two queries whatever the number of live sessions (the scheduler runs
            # this on every pass).
            rows = await tx.fetch(
                f"SELECT {_SESSION_COLS} FROM sessions s JOIN timeslots t "
                "ON t.id = s.timeslot_id WHERE s.status <> 'ended' ORDER BY t.start_time, s.id")
            people = await tx.fetch(
                "SELECT p.* FROM participants p JOIN sessions s ON s.id = p.session_id "
                "WHERE s.status <> 'ended' AND p.status = 'joined' ORDER BY p.joined_at, p.id")
            by_session: dict[str, list[ParticipantView]] = {}
            for p in people:
                by_session.setdefault(p["session_id"], []).append(_participant(p))
            return [_session_info(r, by_session.get(r["id"], [])) for r in rows]

        return await self.db.transaction(unit)

    # -- scheduler --------------------------------------------------------------------------

    async def due_reminders(self, now: dt.datetime, lead: dt.timedelta) -> list[Row]:
        """Slots not yet reminded whose reminder time has come and which have not ended."""

        async def unit(tx: Tx) -> list[Row]:
            return await tx.fetch(
                "SELECT id, start_time, duration_minutes FROM timeslots WHERE is_active "
                "AND reminded_at IS NULL AND start_time <= $1 AND start_time > $2 "
                "ORDER BY start_time, id", now + lead, now - LOOKBACK)

        rows = await self.db.transaction(unit)
        return [r for r in rows if _end(r) > now]

    async def mark_reminded(self, slot_id: str, now: dt.datetime) -> list[str] | None:
        """Claim the slot's reminder (once, ever) and record `timeslot.reminder`.

        Returns the registered users to tell, or None when it was already claimed.
        """

        async def unit(tx: Tx) -> list[str] | None:
            row = await tx.fetchrow(
                "UPDATE timeslots SET reminded_at = $2 WHERE id = $1 AND reminded_at IS NULL "
                "RETURNING start_time, target_language_code, level", slot_id, now)
            if row is None:
                return None
            users = [r["user_id"] for r in await tx.fetch(
                "SELECT user_id FROM registrations WHERE timeslot_id = $1 "
                "AND status = 'registered' ORDER BY registered_at, id", slot_id)]
            await _outbox(tx, now, "timeslot.reminder", {
                "timeSlotId": slot_id, "startTime": iso(as_datetime(row["start_time"])),
                "targetLanguageCode": row["target_language_code"], "level": row["level"],
                "userIds": users})
            return users

        return await self.db.transaction(unit)

    async def slots_to_open(self, now: dt.datetime) -> list[str]:
        """Slots that have started, have not ended, and have no session yet."""

        async def unit(tx: Tx) -> list[Row]:
            return await tx.fetch(
                "SELECT t.id, t.start_time, t.duration_minutes FROM timeslots t "
                "LEFT JOIN sessions s ON s.timeslot_id = t.id WHERE t.is_active AND s.id IS NULL "
                "AND t.start_time <= $1 AND t.start_time > $2 ORDER BY t.start_time",
                now, now - LOOKBACK)

        return [r["id"] for r in await self.db.transaction(unit) if _end(r) > now]

    async def next_starts(self, now: dt.datetime) -> tuple[dt.datetime | None, ...]:
        """(next unreminded slot start, next session-less slot start, next series horizon)."""

        async def unit(tx: Tx) -> tuple[dt.datetime | None, ...]:
            reminder = await tx.fetchrow(
                "SELECT min(start_time) AS t FROM timeslots WHERE is_active "
                "AND reminded_at IS NULL AND start_time > $1", now)
            opening = await tx.fetchrow(
                "SELECT min(t.start_time) AS t FROM timeslots t LEFT JOIN sessions s "
                "ON s.timeslot_id = t.id WHERE t.is_active AND s.id IS NULL AND t.start_time > $1",
                now)
            series = await tx.fetchrow(
                "SELECT min(expanded_until) AS t FROM timeslot_series WHERE NOT finished")
            return tuple(as_datetime(r["t"]) if r else None for r in (reminder, opening, series))

        return await self.db.transaction(unit)

    # -- outbox -----------------------------------------------------------------------------

    async def pending_events(self, limit: int = 100) -> list[OutboxEvent]:
        async def unit(tx: Tx) -> list[Row]:
            return await tx.fetch(
                "SELECT * FROM outbox WHERE published_at IS NULL ORDER BY occurred_at, id "
                "LIMIT $1", limit)

        rows = await self.db.transaction(unit)
        out = []
        for r in rows:
            payload = r["payload"]
            occurred = as_datetime(r["occurred_at"])
            assert occurred is not None
            out.append(OutboxEvent(r["id"], r["topic"], r["type"],
                                   orjson.loads(payload) if isinstance(payload, str | bytes)
                                   else dict(payload), occurred))
        return out

    async def mark_published(self, ids: Sequence[str], now: dt.datetime) -> None:
        async def unit(tx: Tx) -> None:
            for event_id in ids:
                await tx.execute("UPDATE outbox SET published_at = $2 WHERE id = $1", event_id, now)

        await self.db.transaction(unit)


def _end(row: Row) -> dt.datetime:
    start = as_datetime(row["start_time"])
    assert start is not None
    return start + dt.timedelta(minutes=row["duration_minutes"])


async def _ensure_session(tx: Tx, slot_id: str, now: dt.datetime,
                          lock: bool = False) -> SessionInfo | None:
    found = await _session(tx, "s.timeslot_id = $1", slot_id, lock=lock)
    if found is not None:
        return found
    slot = await tx.fetchrow("SELECT * FROM timeslots WHERE id = $1", slot_id)
    if slot is None:
        return None
    await tx.execute(
        "INSERT INTO sessions (id, timeslot_id, target_language_code, level, status, created_at) "
        "VALUES ($1, $2, $3, $4, 'waiting', $5) ON CONFLICT DO NOTHING",
        new_id(), slot_id, slot["target_language_code"], slot["level"], now)
    return await _session(tx, "s.timeslot_id = $1", slot_id, lock=lock)


async def _cancel(tx: Tx, slot_id: str, user_id: str, now: dt.datetime,
                  reason: str) -> tuple[bool, Change | None]:
    reg = await tx.fetchrow(
        "SELECT id FROM registrations WHERE timeslot_id = $1 AND user_id = $2 "
        "AND status = 'registered' FOR UPDATE", slot_id, user_id)
    if reg is None:
        if await tx.fetchrow("SELECT id FROM timeslots WHERE id = $1", slot_id) is None:
            raise AppError("not_found", "no such time slot")
        return False, None
    await tx.execute(
        "UPDATE registrations SET status = 'cancelled', cancelled_at = $2 WHERE id = $1",
        reg["id"], now)
    await _outbox(tx, now, "registration.cancelled",
                  {"timeSlotId": slot_id, "userId": user_id, "reason": reason})
    session = await tx.fetchrow(
        "SELECT id FROM sessions WHERE timeslot_id = $1 AND status <> 'ended'", slot_id)
    change = None
    if session is not None:
        change = await _leave(tx, session["id"], user_id, now)
    return True, change
