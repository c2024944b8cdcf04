"""The conversation service: what REST, the namespace and the scheduler share.

Every change follows one path: a repository transaction decides and records
(with its domain events in the outbox), then the session's Room actor
mirrors the change and tells the clients, then the outbox relay is poked.
Database I/O happens here, never inside a room command.

The scheduler (`run_scheduler`) is a loop on trio's clock: each pass reads
from the database what is due (series to extend, reminders, sessions to
create, grace periods and slot ends), does it, and sleeps until the next
instant something is due or until it is poked (a slot was created, a
session changed). Because every pass starts from the database, a restart
recomputes everything: a reminder is claimed in the same transaction as its
`timeslot.reminder` event (so it is never sent twice), and one whose time
passed while the daemon was down goes out at the first pass (never lost, as
long as its slot has not ended).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping
from typing import Any

import trio

from pratico_daemon import logs
from pratico_daemon.backoff import Backoff
from pratico_daemon.config import Config
from pratico_daemon.conversation import live as commands
from pratico_daemon.conversation import slots as slotmod
from pratico_daemon.conversation.bus import Bus, OutboxRelay
from pratico_daemon.conversation.clock import WallClock
from pratico_daemon.conversation.db import iso
from pratico_daemon.conversation.lifecycle import SessionStatus, Trigger
from pratico_daemon.conversation.live import LiveSession
from pratico_daemon.conversation.repo import (
    Change,
    ConversationRepo,
    NewSeries,
    NewSlot,
    SessionInfo,
    new_id,
)
from pratico_daemon.errors import AppError
from pratico_daemon.rooms.registry import RoomRegistry
from pratico_daemon.rooms.room import Room
from pratico_daemon.session.directory import ClientDirectory
from pratico_daemon.storage.protocols import StorageUnavailable

log = logs.get("conversation")

NAMESPACE = "/conversation"
USER_EVENTS = "user.events"
CONSUMER_GROUP = "conversation"
# A series is extended when its expansion reaches less than this far ahead of
# the horizon; one pass a day keeps "horizon_days ahead" true to the day.
SERIES_STEP = dt.timedelta(days=1)


def check_uuid(value: str, what: str = "time slot") -> str:
    import uuid

    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise AppError("not_found", f"no such {what}") from None


class ConversationService:
    def __init__(self, config: Config, rooms: RoomRegistry, directory: ClientDirectory,
                 *, clock: WallClock | None = None, node_id: str = "node",
                 user_events_poll_s: float = 1.0, relay_idle_s: float = 30.0) -> None:
        self.config = config
        self.conf = config.conversation
        self.rooms = rooms
        self.directory = directory
        self.clock = clock or WallClock()
        self.node_id = node_id
        self.user_events_poll_s = user_events_poll_s
        self.relay_idle_s = relay_idle_s
        self.live_by_user: dict[str, str] = {}
        self.repo: ConversationRepo | None = None
        self.bus: Bus | None = None
        self.relay: OutboxRelay | None = None
        self._tick_wake = trio.Event()
        self.ticks = 0
        # Issue 8: a `recording.service.RecordingService` when `[recording] enabled`;
        # told (`sync(room)`) after every change that may start or stop a recording.
        self.recording: Any = None

    def __repr__(self) -> str:
        return f"<ConversationService {len(self.live_by_user)} users live>"

    # -- wiring -----------------------------------------------------------------------------

    def attach_backend(self, repo: ConversationRepo, bus: Bus) -> None:
        self.repo = repo
        self.bus = bus
        self.relay = OutboxRelay(repo, bus, self.clock, idle_s=self.relay_idle_s)

    def _repo(self) -> ConversationRepo:
        if self.repo is None:
            raise AppError("unavailable", "the conversation store is not open yet")
        return self.repo

    def poke(self) -> None:
        """Something changed: the scheduler re-reads its agenda, the relay publishes."""
        self._tick_wake.set()
        if self.relay is not None:
            self.relay.poke()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Scheduler, outbox relay and `user.events` consumer, until cancelled."""
        assert self.relay is not None, "attach_backend first"
        async with trio.open_nursery() as nursery:
            await nursery.start(self.relay.run)
            nursery.start_soon(self.run_scheduler)
            nursery.start_soon(self.consume_user_events)
            task_status.started()

    # -- rooms ------------------------------------------------------------------------------

    async def open_room(self, session: SessionInfo) -> Room | None:
        if session.status is SessionStatus.ENDED:
            return None
        room = self.rooms.get(session.id)
        if room is not None:
            await self._sync_recording(room)
            return room
        fresh: list[Room] = []

        def factory() -> Room:
            state = LiveSession(session.id, session.slot_id, session.status,
                                {p.user_id: p for p in session.participants})
            room = Room(session.id, "conversation", NAMESPACE, state=state,
                        max_members=self.config.limits.max_room_members)
            room.on_end.append(lambda r: commands.forget(self, r))
            fresh.append(room)
            return room

        room = await self.rooms.open(session.id, factory)
        if fresh and fresh[0] is room:
            await room.call(commands.adopt(self))
        await self._sync_recording(room)
        return room

    async def _sync_recording(self, room: Room | None) -> None:
        """Start, extend or stop the session's recording to match its state (issue 8)."""
        if self.recording is not None and room is not None:
            await self.recording.sync(room)

    async def _mirror(self, change: Change) -> None:
        """Tell a session's room what a transaction did to it.

        A room that ended in between (a timer won the race) has nothing left to
        tell: the transaction stands, the clients heard `session-ended`.
        """
        try:
            room = self.rooms.get(change.session.id) or await self.open_room(change.session)
            if room is None:
                return
            if change.participant is not None and change.user_id is not None:
                await room.call(commands.apply_join(self, change.user_id, change.participant,
                                                    change.transition))
            elif change.user_id is not None:
                await room.call(commands.apply_leave(self, change.user_id, change.transition))
            elif change.transition is not None and change.transition.reason is not None:
                await room.call(commands.apply_end(self, change.transition.reason.value))
            await self._sync_recording(room)
        except AppError as exc:
            if exc.code not in ("not_found", "session_ended"):
                raise

    # -- REST operations --------------------------------------------------------------------

    async def create_slots(self, body: Mapping[str, Any], created_by: str) -> dict[str, Any]:
        repo = self._repo()
        now = self.clock.now()
        request = slotmod.parse_slot_request(body, now=now, cap=self.conf.max_participants_cap)
        if request.rrule is None:
            slot = NewSlot(new_id(), request.start, request.language, request.level,
                           request.duration_minutes, request.min_participants,
                           request.max_participants, request.timezone, created_by=created_by)
            views = await repo.create_slots([slot], None, now)
            self.poke()
            return views[0]
        series_id = new_id()
        horizon = now + dt.timedelta(days=self.conf.horizon_days)
        starts = slotmod.expand(request.rrule, request.local_start, request.timezone,
                                after=None, until=horizon)
        new = [NewSlot(new_id(), start, request.language, request.level,
                       request.duration_minutes, request.min_participants,
                       request.max_participants, request.timezone, request.rrule,
                       series_id, created_by) for start in starts]
        finished = not slotmod.expand(request.rrule, request.local_start, request.timezone,
                                      after=horizon, until=dt.datetime.max.replace(tzinfo=dt.UTC),
                                      limit=1)
        series = NewSeries(series_id, request.rrule, request.timezone,
                           request.local_start.isoformat(), request.language, request.level,
                           request.duration_minutes, request.min_participants,
                           request.max_participants, created_by, horizon, finished)
        views = await repo.create_slots(new, series, now)
        self.poke()
        return {"seriesId": series_id, "slots": views}

    async def register(self, user_id: str, slot_id: str) -> dict[str, Any]:
        created = await self._repo().register(check_uuid(slot_id), user_id, self.clock.now())
        if created:
            self.poke()
        return {"status": "registered"}

    async def cancel(self, user_id: str, slot_id: str) -> dict[str, Any]:
        cancelled, change = await self._repo().cancel(check_uuid(slot_id), user_id,
                                                      self.clock.now())
        if cancelled:
            self.poke()
        if change is not None:
            await self._mirror(change)
        return {"status": "cancelled"}

    async def join(self, user_id: str, slot_id: str, consent: bool) -> dict[str, Any]:
        change = await self._repo().join(check_uuid(slot_id), user_id, consent, self.clock.now())
        self.poke()
        await self._mirror(change)
        state = LiveSession(change.session.id, change.session.slot_id, change.session.status,
                            {p.user_id: p for p in change.session.participants}).wire()
        return {**state, "iceServers": list(self.conf.ice_servers)}

    async def add_recorder(self, session_id: str, recorder_id: str) -> None:
        """Put a recorder participant in a live session (the place issue 8 builds on).

        It is a participant for signalling (offers reach it, it may send them)
        but counts toward neither occupancy, the cap, nor `minParticipants`.
        """
        change = await self._repo().join_recorder(check_uuid(session_id, "session"),
                                                  recorder_id, self.clock.now())
        await self._mirror(change)

    async def leave(self, user_id: str, session_id: str) -> dict[str, Any]:
        repo = self._repo()
        session_id = check_uuid(session_id, "session")
        change = await repo.leave(session_id, user_id, self.clock.now())
        if change is None:
            view = await repo.session_view(session_id)
            if view is None or not any(p["userId"] == user_id for p in view["participants"]):
                raise AppError("not_found", "you are not a participant of this session")
            return {"status": "left"}
        self.poke()
        await self._mirror(change)
        return {"status": "left"}

    async def set_media(self, user_id: str, camera: bool | None, mic: bool | None,
                        consent: bool | None) -> dict[str, Any]:
        session_id, view = await self._repo().set_media(user_id, camera, mic, consent)
        room = self.rooms.get(session_id)
        if room is not None:
            await room.call(commands.apply_media(self, user_id, view))
            await self._sync_recording(room)
        return {**view.wire(), "recordingConsent": view.consent, "sessionId": session_id}

    async def session_view(self, user_id: str, role: str, session_id: str) -> dict[str, Any]:
        view = await self._repo().session_view(check_uuid(session_id, "session"))
        if view is None:
            raise AppError("not_found", "no such session")
        if role != "admin" and not any(p["userId"] == user_id for p in view["participants"]):
            raise AppError("forbidden", "only participants and admins may read a session")
        return view

    async def delete_user(self, user_id: str) -> int:
        changes = await self._repo().delete_user(user_id, self.clock.now())
        self.poke()
        for change in changes:
            await self._mirror(change)
        return len(changes)

    # -- signalling -------------------------------------------------------------------------

    async def relay_signal(self, from_user: str, name: str, to_user: str,
                           payload: dict[str, Any]) -> dict[str, Any]:
        session_id = self.live_by_user.get(from_user)
        room = self.rooms.get(session_id) if session_id else None
        if room is None:
            raise AppError("not_found", "you are not in a live session")
        return await room.call(commands.relay(self, from_user, to_user, name, payload))

    def client_connected(self, client: Any) -> None:
        """Attach a participant's new connection to its live session (queued, never blocks)."""
        session_id = self.live_by_user.get(client.identity.user_id)
        room = self.rooms.get(session_id) if session_id else None
        if room is not None:
            room.call_nowait(commands.attach(self, client))
            if self.recording is not None and room.nursery is not None:
                # Queued behind the attach; a closing room refuses new tasks.
                with contextlib.suppress(RuntimeError):
                    room.nursery.start_soon(self.recording.sync, room)

    def client_gone(self, client: Any) -> None:
        for room in self.rooms.rooms("conversation"):
            if client.sid in room.members:
                room.call_nowait(commands.detach(client.sid))

    # -- scheduler --------------------------------------------------------------------------

    async def run_scheduler(self) -> None:
        backoff = Backoff(0.5, 30.0)
        while True:
            self._tick_wake = trio.Event()
            try:
                wake_at = await self.tick()
                backoff.reset()
            except StorageUnavailable as exc:
                log.warning("scheduler: %s (retry in %.1fs)", exc, backoff.delay)
                await backoff.wait()
                continue
            except Exception:
                # A bug in one pass must not stop every future reminder and end.
                log.exception("scheduler pass failed (retry in %.1fs)", backoff.delay)
                await backoff.wait()
                continue
            with trio.move_on_at(self.clock.deadline(wake_at)):
                await self._tick_wake.wait()

    async def tick(self) -> dt.datetime | None:
        """One pass: do what is due now; return when the next thing is due."""
        repo = self._repo()
        self.ticks += 1
        now = self.clock.now()
        lead = dt.timedelta(seconds=self.conf.reminder_lead_s)
        grace = dt.timedelta(seconds=self.conf.grace_period_s)
        horizon = now + dt.timedelta(days=self.conf.horizon_days)
        for series in await repo.series_due(horizon - SERIES_STEP):
            await self._extend(series, now, horizon)
        for slot in await repo.due_reminders(now, lead):
            users = await repo.mark_reminded(slot["id"], now)
            if users is None:
                continue
            self.poke()
            payload = {"timeSlotId": slot["id"], "startTime": iso(slot_start(slot))}
            for user_id in users:
                for client in self.directory.of_user(user_id):
                    client.emit("reminder", payload)
        for slot_id in await repo.slots_to_open(now):
            session = await repo.ensure_session(slot_id, now)
            if session is not None:
                await self.open_room(session)
        wakes: list[dt.datetime] = []
        for session in await repo.live_sessions():
            trigger = None
            if now >= session.end:
                trigger = Trigger.SLOT_ENDED
            elif session.status is SessionStatus.WAITING and now >= session.start + grace:
                trigger = Trigger.GRACE_EXPIRED
            if trigger is not None:
                change = await repo.end_session(session.id, trigger, now)
                if change is not None:
                    self.poke()
                    await self._mirror(change)
                continue
            await self.open_room(session)
            wakes.append(session.end)
            if session.status is SessionStatus.WAITING:
                wakes.append(min(session.start + grace, session.end))
        reminder, opening, series_until = await repo.next_starts(now)
        if reminder is not None:
            wakes.append(reminder - lead)
        if opening is not None:
            wakes.append(opening)
        if series_until is not None:
            wakes.append(series_until - dt.timedelta(days=self.conf.horizon_days) + SERIES_STEP)
        return max(min(wakes), now) if wakes else None

    async def _extend(self, series: Mapping[str, Any], now: dt.datetime,
                      horizon: dt.datetime) -> None:
        repo = self._repo()
        local_start = dt.datetime.fromisoformat(series["local_start"])
        after = series["expanded_until"]
        from pratico_daemon.conversation.db import as_datetime

        after_dt = as_datetime(after)
        starts = slotmod.expand(series["rrule"], local_start, series["timezone"],
                                after=after_dt, until=horizon)
        new = [NewSlot(new_id(), start, series["target_language_code"], series["level"],
                       series["duration_minutes"], series["min_participants"],
                       series["max_participants"], series["timezone"], series["rrule"],
                       series["id"], series["created_by"]) for start in starts]
        finished = not slotmod.expand(series["rrule"], local_start, series["timezone"],
                                      after=horizon,
                                      until=dt.datetime.max.replace(tzinfo=dt.UTC), limit=1)
        await repo.extend_series(series["id"], new, horizon, finished, now)

    # -- user.events ------------------------------------------------------------------------

    async def _handle_user_event(self, delivery: Any) -> None:
        """One entry; anything but an outage is logged and acknowledged (no poison loop)."""
        user_id = _user_event_user(delivery)
        if user_id is None:
            return
        try:
            await self.delete_user(user_id)
        except StorageUnavailable:
            raise
        except Exception:
            log.exception("user.deleted %s could not be applied", user_id)
            return
        for client in self.directory.of_user(user_id):
            client.disconnect_soon("user deleted")

    async def consume_user_events(self) -> None:
        """The `user.events` consumer group: `user.deleted` cancels and removes the user."""
        assert self.bus is not None
        while True:
            try:
                batch = await self.bus.read_group(USER_EVENTS, CONSUMER_GROUP, self.node_id)
                for delivery in batch:
                    await self._handle_user_event(delivery)
                await self.bus.ack(USER_EVENTS, CONSUMER_GROUP,
                                   [d.delivery_id for d in batch])
            except StorageUnavailable as exc:
                log.warning("user.events: %s", exc)
                batch = []
            except Exception:
                log.exception("user.events consumer failed; retrying")
                batch = []
            if not batch:
                await trio.sleep(self.user_events_poll_s)


def _user_event_user(delivery: Any) -> str | None:
    payload = delivery.payload()
    if delivery.type != "user.deleted" or not isinstance(payload, dict):
        return None
    user_id = payload.get("userId")
    return user_id if isinstance(user_id, str) and 0 < len(user_id) <= 200 else None


def slot_start(row: Mapping[str, Any]) -> dt.datetime:
    from pratico_daemon.conversation.db import as_datetime

    value = as_datetime(row["start_time"])
    assert value is not None
    return value
