"""The `/pratico` namespace: live capsule rooms over both framings (PROTOCOL.md §3).

Theory of operation
-------------------
Each live room is a `Room` actor whose `state` is a `PraticoState`. A client
event becomes one quick *command* run by the room's loop: it checks the rules
(`state.py`), changes the state, broadcasts the deltas and returns the
`RoomEvent`s that describe what happened. The handler then records those
events *outside* the room (a durable write must never stall the room) and
only then acknowledges. For a quiz answer that order is the guarantee: the
ack means "in Postgres or the journal"; when neither takes it the answer is
undone through another command and the client hears `unavailable`.

Connections are members of the room (member id = sid). A participant (a
guest, or the trainer) may hold several connections; it is `connected` while
it holds at least one. The gateway keeps a dropped connection for the
recovery window: `disconnect` turns the participant's presence off at once,
`reconnected` turns it back on, `gone` removes the member.

Timers live in the room's nursery: the quiz deadline (absolute wall-clock
time, so a restored room closes its quiz at the original time) and the
empty-room timeout. Work that must outlive the room — recording
`session_ended`, deleting the checkpoint, the `rooms` row and the chat — runs
in the namespace's own nursery (`run`), so ending a room from a timer inside
that room cannot cancel its own cleanup.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from pratico_daemon import logs
from pratico_daemon.errors import AppError
from pratico_daemon.pratico import slug as slugs
from pratico_daemon.pratico.replay import apply_events
from pratico_daemon.pratico.state import (
    CHECKPOINT_KIND,
    GUEST,
    NAVIGATION_MODES,
    TRAINER,
    Participant,
    PraticoState,
    Question,
    iso,
)
from pratico_daemon.pratico.tokens import GuestTokens
from pratico_daemon.rooms.room import Room
from pratico_daemon.session.namespace import Client, Namespace
from pratico_daemon.session.ratelimit import TokenBucket
from pratico_daemon.session.validate import ID, Field, fields, optional
from pratico_daemon.storage.protocols import (
    Checkpoint,
    Conflict,
    InvalidData,
    RoomEvent,
    StorageError,
    StorageUnavailable,
)

log = logs.get("pratico")

KIND = CHECKPOINT_KIND
DISPLAY_NAME = Field((str,), min_len=1, max_len=100)
PAGE = Field((int, str))
# A quiz is a handful of questions; these bounds keep one launch well under
# the 64 KiB message limit's spirit and make the results cheap to compute.
MAX_QUESTIONS = 200
MAX_CHOICES = 26
MAX_TIME_LIMIT_S = 24 * 3600.0
# People type; a burst of 10 messages then one every half second never bites
# a human and stops a script flooding the room.
CHAT_RATE_PER_S = 2.0
CHAT_BURST = 10
# Cleanup after the end retries this long while Postgres/Redis are away.
CLEANUP_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


@attrs.define
class _Runtime:
    """A live room's runtime-only companions (never checkpointed)."""

    empty_timer: trio.CancelScope | None = None
    deadline_timer: trio.CancelScope | None = None
    chat_buckets: dict[str, TokenBucket] = attrs.Factory(dict)


@attrs.frozen
class _Joined:
    room_id: str
    participant_id: str


class PraticoNamespace(Namespace):
    """Handlers of `/pratico`; see the module docstring."""

    name = "/pratico"

    def __init__(self, services: Any, *, now: Callable[[], float] = time.time) -> None:
        super().__init__(services)
        self.now = now
        secret = getattr(services.auth, "sign_key", None)
        self.tokens = GuestTokens(secret if isinstance(secret, str) else None)
        self.names: dict[str, str] = {}  # live name -> room id, for rooms on this node
        self._runtime: dict[str, _Runtime] = {}
        self._nursery: trio.Nursery | None = None
        for event, handler in {
            "join": self.on_join, "get_state": self.on_get_state, "leave": self.on_leave,
            "set_page": self.on_set_page, "set_activity": self.on_set_activity,
            "set_params": self.on_set_params, "launch_quiz": self.on_launch_quiz,
            "close_quiz": self.on_close_quiz, "answer_quiz": self.on_answer_quiz,
            "kick": self.on_kick, "change_capsule": self.on_change_capsule,
            "end_session": self.on_end_session, "chat_send": self.on_chat_send,
            "get_capsule": self.on_get_capsule,
        }.items():
            self.events[event] = handler

    def __repr__(self) -> str:
        return f"<PraticoNamespace {len(self.names)} live rooms, {len(self.directory)} clients>"

    @property
    def config(self) -> Any:
        return self.services.config

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Own the nursery of post-room work (end cleanup) for the daemon's lifetime."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # -- helpers -------------------------------------------------------------------------

    def link(self, name: str) -> str:
        return f"{self.config.http.public_base_url.rstrip('/')}/r/{name}"

    def stamp(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.now(), dt.UTC)

    def event(self, state: PraticoState, type_: str, data: Mapping[str, Any],
              user_id: str | None = None) -> RoomEvent:
        """A `room_events` row. Seed 000: a room's events carry its launcher's user id."""
        event = RoomEvent(room_id=state.room_id, type=type_, data=dict(data),
                          user_id=user_id or state.created_by, created_at=self.stamp())
        state.last_event = str(event.id)  # what a checkpoint of this state includes
        return event

    def is_trainer(self, client: Client, state: PraticoState) -> bool:
        identity = client.identity
        if identity.claims is None:
            return False
        if identity.user_id == state.created_by:
            return True
        return identity.role == "admin" and identity.org_id == state.org_id

    def room(self, room_id: str) -> Room:
        room = self.services.rooms.get(room_id) if self.services.rooms is not None else None
        if room is None or room.kind != KIND:
            raise AppError("not_found", "room not found or ended")
        return room

    def joined(self, client: Client) -> tuple[Room, str]:
        joined = client.data.get("pratico")
        if not isinstance(joined, _Joined):
            raise AppError("forbidden", "join a room first")
        return self.room(joined.room_id), joined.participant_id

    def changed(self, room: Room) -> None:
        """The room's state changed: a new version, and a checkpoint to write."""
        room.state.touch()
        self.mark_dirty(room)

    def mark_dirty(self, room: Room) -> None:
        """Tell the checkpointer the room changed (it snapshots when it writes)."""
        checkpointer = _checkpointer(self.services)
        if checkpointer is None:
            return
        state: PraticoState = room.state
        checkpointer.mark_dirty(
            room.room_id,
            lambda: Checkpoint(room.room_id, KIND, state.version, state.snapshot()),
        )

    async def record(self, events: list[RoomEvent]) -> None:
        """Make events durable; a failure is logged (only quiz answers must fail loudly)."""
        stores = self.services.stores
        for event in events:
            try:
                await stores.events.append_durable(event)
            except StorageError as exc:
                log.error("room event %s of room %s not recorded: %s", event.type,
                          event.room_id, exc)

    def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` in the namespace's nursery (work that outlives a room)."""
        if self._nursery is None:
            raise RuntimeError("PraticoNamespace.run is not running")
        self._nursery.start_soon(fn, *args)

    # -- opening rooms (REST create, restore) -----------------------------------------------

    async def open_room(self, state: PraticoState) -> Room:
        """Start the actor of `state` and arm its timers (deadline, empty room)."""
        room_id = state.room_id

        def factory() -> Room:
            return Room(room_id, KIND, self.name, state=state,
                        max_members=self.config.limits.max_room_members)

        room = await self.services.rooms.open(room_id, factory)
        self._runtime.setdefault(room_id, _Runtime())
        self.names[state.name] = room_id
        room.on_end.append(self._forget_room)

        def arm(r: Room) -> None:
            quiz = state.quiz
            if quiz is not None and quiz.open and quiz.deadline is not None:
                self._arm_deadline(r, quiz.quiz_id, quiz.deadline)
            self._watch_empty(r)
            self.mark_dirty(r)

        await room.call(arm)
        return room

    def _forget_room(self, room: Room) -> None:
        state: PraticoState = room.state
        if self.names.get(state.name) == room.room_id:
            del self.names[state.name]
        self._runtime.pop(room.room_id, None)

    def runtime(self, room: Room) -> _Runtime:
        return self._runtime.setdefault(room.room_id, _Runtime())

    # -- timers (inside the room) ---------------------------------------------------------

    def _arm_deadline(self, room: Room, quiz_id: str, deadline: float) -> None:
        assert room.nursery is not None
        rt = self.runtime(room)
        if rt.deadline_timer is not None:
            rt.deadline_timer.cancel()
        rt.deadline_timer = scope = trio.CancelScope()
        room.nursery.start_soon(self._deadline_timer, room, quiz_id, deadline, scope)

    async def _deadline_timer(self, room: Room, quiz_id: str, deadline: float,
                              scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep(max(0.0, deadline - self.now()))
            try:
                event = await room.call(lambda r: self._cmd_close_quiz(r, quiz_id, "deadline"))
            except AppError:
                return  # closed meanwhile (trainer), or the room ended
            self.spawn(self.record, [event])

    def _watch_empty(self, room: Room) -> None:
        """Arm the empty-room timer when nobody is connected, disarm it otherwise."""
        state: PraticoState = room.state
        rt = self.runtime(room)
        anyone = any(p.connected for p in state.participants.values())
        if anyone and rt.empty_timer is not None:
            rt.empty_timer.cancel()
            rt.empty_timer = None
        elif not anyone and rt.empty_timer is None and room.nursery is not None:
            rt.empty_timer = scope = trio.CancelScope()
            room.nursery.start_soon(self._empty_timer, room, scope)

    async def _empty_timer(self, room: Room, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep(self.config.rooms.empty_timeout_s)
            log.info("room %s empty for %.0fs: ending", room.room_id,
                     self.config.rooms.empty_timeout_s)
            self.spawn(self.end_room, room.room_id, None, "empty")

    # -- connection lifecycle ---------------------------------------------------------------

    async def connect(self, client: Client, auth: Mapping[str, Any]) -> Mapping[str, Any] | None:
        # Anyone may connect: guests have no token, and what a client may do is
        # decided at `join` against the room it names.
        return None

    async def disconnect(self, client: Client, reason: str) -> None:
        joined = client.data.get("pratico")
        if not isinstance(joined, _Joined):
            return
        room = self.services.rooms.get(joined.room_id) if self.services.rooms else None
        if room is None:
            return
        try:
            events = await room.call(lambda r: self._cmd_presence(r, client, joined, False))
        except AppError:
            return
        await self.record(events)

    async def reconnected(self, client: Client) -> None:
        joined = client.data.get("pratico")
        if not isinstance(joined, _Joined):
            return
        room = self.services.rooms.get(joined.room_id) if self.services.rooms else None
        if room is None:
            client.disconnect_soon("session ended")
            return
        try:
            events = await room.call(lambda r: self._cmd_presence(r, client, joined, True))
        except AppError:
            return
        await self.record(events)

    async def gone(self, client: Client) -> None:
        joined = client.data.pop("pratico", None)
        if not isinstance(joined, _Joined):
            return
        room = self.services.rooms.get(joined.room_id) if self.services.rooms else None
        if room is None:
            return
        try:
            events = await room.call(lambda r: self._cmd_gone(r, client, joined))
        except AppError:
            return
        await self.record(events)

    def _cmd_presence(self, room: Room, client: Client, joined: _Joined,
                      connected: bool) -> list[RoomEvent]:
        state: PraticoState = room.state
        participant = state.participants.get(joined.participant_id)
        if participant is None:
            return []
        was = participant.connected
        if connected:
            participant.sids.add(client.sid)
        else:
            participant.sids.discard(client.sid)
        self._watch_empty(room)
        if was == participant.connected:
            return []
        room.broadcast("participant_presence",
                       {"participant_id": participant.participant_id, "connected": connected})
        kind = "participant_joined" if connected else "participant_left"
        return [self.event(state, kind, {"participant_id": participant.participant_id,
                                         "display_name": participant.display_name,
                                         "role": participant.role,
                                         "reason": "reconnected" if connected else "disconnected"})]

    def _cmd_gone(self, room: Room, client: Client, joined: _Joined) -> list[RoomEvent]:
        room.leave(client.sid)
        events = self._cmd_presence(room, client, joined, False)
        return events

    # -- join / state / leave -----------------------------------------------------------------

    async def on_join(self, client: Client, payload: dict[str, Any]) -> dict[str, Any]:
        name, display_name, guest_token = fields(
            payload, room=ID, display_name=optional(DISPLAY_NAME),
            guest_token=optional(Field((str,), max_len=2000)))
        room_id = self.names.get(name)
        if room_id is None:
            raise AppError("not_found", f"no live room named {name!r}")
        room = self.room(room_id)
        previous = client.data.get("pratico")
        if isinstance(previous, _Joined):
            if previous.room_id != room_id:
                raise AppError("conflict", "this connection already joined another room")
            return await room.call(lambda r: self._rejoin_reply(r, previous.participant_id))
        claims = self.tokens.verify(guest_token) if guest_token is not None else None
        if claims is not None and claims.room_id != room_id:
            raise AppError("unauthorized", "guest_token: issued for another room")
        if display_name is not None:
            display_name = display_name.strip()
            if not display_name:
                raise AppError("invalid_payload", "display_name: blank")

        def command(r: Room) -> tuple[dict[str, Any], list[RoomEvent]]:
            return self._cmd_join(r, client, display_name,
                                  claims.participant_id if claims else None)

        reply, events = await room.call(command)
        await self.record(events)
        return reply

    def _cmd_join(self, room: Room, client: Client, display_name: str | None,
                  returning: str | None) -> tuple[dict[str, Any], list[RoomEvent]]:
        state: PraticoState = room.state
        now = self.now()
        token: str | None = None
        if self.is_trainer(client, state):
            pid = f"u_{client.identity.user_id}"
            role = TRAINER
            display_name = display_name or str(
                client.identity.claims.raw.get("name") or "Trainer")  # type: ignore[union-attr]
        elif client.identity.claims is not None:
            # A signed-in user who is not this room's trainer takes part as itself.
            pid, role = f"u_{client.identity.user_id}", GUEST
        elif returning is not None:
            if returning in state.revoked:
                raise AppError("unauthorized", "guest_token: revoked")
            if returning not in state.participants:
                raise AppError("unauthorized", "guest_token: unknown participant")
            pid, role = returning, GUEST
        else:
            pid, role = f"g_{uuid.uuid4().hex[:16]}", GUEST
        if role == GUEST and pid.startswith("g_"):
            token = self.tokens.mint(state.room_id, pid)
        participant = state.participants.get(pid)
        events: list[RoomEvent] = []
        returning_now = False
        room.join(client)  # room_full refuses before anything changes
        if participant is None:
            if not display_name:
                room.leave(client.sid)
                raise AppError("invalid_payload", "display_name: missing")
            participant = Participant(pid, display_name, role,
                                      user_id=client.identity.user_id, joined_at=now)
            state.participants[pid] = participant
        else:
            returning_now = True
        was_connected = participant.connected
        participant.sids.add(client.sid)
        client.data["pratico"] = _Joined(state.room_id, pid)
        if not was_connected:
            if returning_now:  # PROTOCOL §3: a participant coming back is presence
                room.broadcast("participant_presence", {"participant_id": pid,
                                                        "connected": True},
                               exclude=[client.sid])
            else:
                room.broadcast("participant_joined", participant.public(),
                               exclude=[client.sid])
            events.append(self.event(state, "participant_joined", {
                "participant_id": pid, "display_name": participant.display_name,
                "role": role, "reason": "rejoin" if returning_now else "join"}))
        self._watch_empty(room)
        self.changed(room)
        reply = {"participant_id": pid, "guest_token": token, "role": role,
                 "state": state.view(pid, self.link(state.name))}
        return reply, events

    def _rejoin_reply(self, room: Room, pid: str) -> dict[str, Any]:
        """`join` again on a joined connection: the same participant, nothing changes."""
        state: PraticoState = room.state
        me = state.participants.get(pid)
        if me is None:
            raise AppError("forbidden", "no longer in this room")
        token = self.tokens.mint(state.room_id, pid) if pid.startswith("g_") else None
        return {"participant_id": pid, "guest_token": token, "role": me.role,
                "state": state.view(pid, self.link(state.name))}

    async def on_get_state(self, client: Client, payload: dict[str, Any]) -> dict[str, Any]:
        room, pid = self.joined(client)
        return await room.call(lambda r: r.state.view(pid, self.link(r.state.name)))

    async def on_leave(self, client: Client, payload: dict[str, Any]) -> dict[str, Any]:
        room, pid = self.joined(client)

        def command(r: Room) -> list[RoomEvent]:
            state: PraticoState = r.state
            participant = state.participants.get(pid)
            r.leave(client.sid)
            client.data.pop("pratico", None)
            if participant is None:
                return []
            participant.sids.discard(client.sid)
            self._watch_empty(r)
            if participant.connected:
                return []
            self.changed(r)
            r.broadcast("participant_left", {"participant_id": pid, "reason": "left"})
            return [self.event(state, "participant_left", {
                "participant_id": pid, "display_name": participant.display_name,
                "reason": "left"})]

        await self.record(await room.call(command))
        return {"left": True}

    # -- trainer events -----------------------------------------------------------------------

    def _trainer(self, room: Room, client: Client) -> PraticoState:
        """The state, if `client` is this room's trainer (checked inside the room)."""
        state: PraticoState = room.state
        joined = client.data.get("pratico")
        participant = state.participants.get(joined.participant_id) if joined else None
        if participant is None or participant.role != TRAINER:
            raise AppError("forbidden", "only the trainer may do this")
        return state

    async def trainer_command(self, client: Client,
                              fn: Callable[[Room, PraticoState], Any]) -> Any:
        room, _ = self.joined(client)
        return await room.call(lambda r: fn(r, self._trainer(r, client)))

    async def on_set_page(self, client: Client, payload: dict[str, Any]) -> dict[str, Any]:
        (page,) = fields(payload, page=PAGE)
        if isinstance(page, str) and not 1 <= len(page) <= 200:
            raise AppError("invalid_payload", "page: 1 to 200 characters")
        room, pid = self.joined(client)

        def command(r: Room) -> tuple[dict[str, Any], list[RoomEvent]]:
            state: PraticoState = r.state
            me = state.participants.get(pid)
            if me is None:
                raise AppError("forbidden", "join a room first")
            if me.role == TRAINER:
                state.page = page
                self.changed(r)
                r.broadcast("page_changed", {"page": page, "by": "trainer"})
                return {"page": page}, [self.event(state, "page_changed", {"page": page})]
            if state.navigation_mode != "free":
                raise AppError("forbidden", "the trainer leads the navigation")
            me.own_page = page
            self.changed(r)
            return {"page": page}, []

        reply, events = await room.call(command)
        await self.record(events)
        return reply

    async def on_set_activity(self, client: Client, payload: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(payload, dict) or "activity" not in payload:
            raise AppError("invalid_payload", "activity: missing")
        activity = payload["activity"]

        def command(r: Room, state: PraticoState) -> list[RoomEvent]:
            state.activity = activity
            self.changed(r)
            r.broadcast("activity_changed", {"activity": activity})
            return [self.event(state, "activity_changed", {"activity": activity})]

        await self.record(await self.trainer_command(client, command))
        return {"activity": activity}

    async def on_set_params(self, client: Client, payload: dict[str, Any]) -> dict[str, Any]:
        mode, collaboration = fields(
            payload, navigation_mode=optional(Field((str,), choices=NAVIGATION_MODES)),
            collaboration=optional(dict))
        if mode is None and collaboration is None:
            raise AppError("invalid_payload", "navigation_mode or collaboration: missing")

        def command(r: Room, state: PraticoState) -> tuple[dict[str, Any], list[RoomEvent]]:
            if mode is not None:
                state.navigation_mode = mode
            if collaboration is not None:
                state.collaboration = collaboration
            self.changed(r)
            changed = {"navigation_mode": state.navigation_mode,
                       "collaboration": state.collaboration}
            r.broadcast("params_changed", changed)
            return changed, [self.event(state, "params_changed", changed)]

        reply, events = await self.trainer_command(client, command)
        await self.record(events)
        return reply

    async def on_change_capsule(self, client: Client, payload: dict[str, Any]) -> dict[str, Any]:
        capsule_id, snapshot = fields(payload, capsule_id=ID, capsule_snapshot=(dict, list))
        room, _ = self.joined(client)
        await room.call(lambda r: self._trainer(r, client))  # refuse before writing anything
        repos = _repos(self.services)
        if repos is not None:
            try:
                await repos.rooms.update(uuid.UUID(room.room_id), capsule_id=capsule_id,
                                         capsule_snapshot=snapshot)
            except InvalidData as exc:
                raise AppError("invalid_payload", f"capsule_snapshot: {exc}") from None
            except StorageUnavailable:
                raise AppError("unavailable", "the room directory is unavailable") from None

        def command(r: Room, state: PraticoState) -> list[RoomEvent]:
            state.capsule_id = capsule_id
            state.capsule_snapshot = snapshot
            self.changed(r)
            r.broadcast("capsule_changed", {"capsule_id": capsule_id})
            return [self.event(state, "capsule_changed", {"capsule_id": capsule_id})]

        await self.record(await self.trainer_command(client, command))
        return {"capsule_id": capsule_id}

    async def on_get_capsule(self, client: Client, payload: dict[str, Any]) -> dict[str, Any]:
        room, _ = self.joined(client)
        return await room.call(lambda r: {"capsule_id": r.state.capsule_id,
                                          "capsule_snapshot": r.state.capsule_snapshot})

    async def on_kick(self, client: Client, payload: dict[str, Any]) -> dict[str, Any]:
        (target,) = fields(payload, participant_id=ID)

        def command(r: Room, state: PraticoState) -> list[RoomEvent]:
            participant = state.participants.get(target)
            if participant is None:
                raise AppError("not_found", f"no participant {target!r}")
            if participant.role == TRAINER:
                raise AppError("forbidden", "the trainer cannot be kicked")
            state.revoked.add(target)
            del state.participants[target]
            for sid in list(participant.sids):
                member = r.leave(sid)
                if member is not None:
                    member.emit("kicked", {"participant_id": target})  # type: ignore[attr-defined]
                    member.data.pop("pratico", None)  # type: ignore[attr-defined]
                    member.disconnect_soon("kicked")  # type: ignore[attr-defined]
            participant.sids.clear()
            self._watch_empty(r)
            self.changed(r)
            r.broadcast("participant_left", {"participant_id": target, "reason": "kicked"})
            return [self.event(state, "participant_left", {
                "participant_id": target, "display_name": participant.display_name,
                "reason": "kicked"})]

        await self.record(await self.trainer_command(client, command))
        return {"participant_id": target, "kicked": True}

    async def on_end_session(self, client: Client, payload: dict[str, Any]) -> dict[str, Any]:
        room, _ = self.joined(client)
        await room.call(lambda r: self._trainer(r, client))
        user = client.identity.user_id
        await self.end_room(room.room_id, user, "trainer", keep=client.sid)
        # Everyone else is already on the way out; the caller's connection closes
        # from a task that runs only after this handler has returned and its ack
        # has been queued (no checkpoint lies between the two).
        self.spawn(_close_later, client)
        return {"room_id": room.room_id, "ended": True}

    # -- quiz -------------------------------------------------------------------------------

    async def on_launch_quiz(self, client: Client, payload: dict[str, Any]) -> dict[str, Any]:
        quiz_id, raw_questions, time_limit = fields(
            payload, quiz_id=ID,
            questions=Field((list,), min_len=1, max_len=MAX_QUESTIONS),
            time_limit_s=optional(Field((int, float), min_value=1, max_value=MAX_TIME_LIMIT_S,
                                        nullable=True), None))
        questions = _questions(raw_questions)

        def command(r: Room, state: PraticoState) -> tuple[dict[str, Any], list[RoomEvent]]:
            quiz = state.launch_quiz(quiz_id, questions, self.now(), time_limit)
            if quiz.deadline is not None:
                self._arm_deadline(r, quiz_id, quiz.deadline)
            self.mark_dirty(r)
            public = quiz.public(with_correct=False)
            r.broadcast("quiz_launched", {"quiz_id": quiz_id, "questions": public["questions"],
                                          "deadline": public["deadline"]})
            return {"quiz_id": quiz_id, "deadline": public["deadline"]}, [
                self.event(state, "quiz_launched", {
                    "quiz_id": quiz_id, "time_limit_s": time_limit,
                    "deadline": public["deadline"],
                    "questions": [attrs.asdict(q) for q in questions]})]

        reply, events = await self.trainer_command(client, command)
        await self.record(events)
        return reply

    async def on_close_quiz(self, client: Client, payload: dict[str, Any]) -> dict[str, Any]:
        (quiz_id,) = fields(payload, quiz_id=ID)

        def command(r: Room, state: PraticoState) -> RoomEvent:
            return self._cmd_close_quiz(r, quiz_id, "trainer")

        event = await self.trainer_command(client, command)
        await self.record([event])
        return {"quiz_id": quiz_id, "results": event.data["results"],
                "scores": event.data["scores"]}

    def _cmd_close_quiz(self, room: Room, quiz_id: str, by: str) -> RoomEvent:
        state: PraticoState = room.state
        state.open_quiz(quiz_id)  # not_found / quiz_closed
        quiz = state.close_quiz(self.now())
        rt = self.runtime(room)
        if rt.deadline_timer is not None and by != "deadline":
            rt.deadline_timer.cancel()
        rt.deadline_timer = None
        self.mark_dirty(room)
        results, points = quiz.results(), quiz.points()
        room.broadcast("quiz_closed", {"quiz_id": quiz_id, "results": results,
                                       "scores": points, "by": by})
        room.broadcast("scores_updated", {"scores": dict(state.scores)})
        return self.event(state, "quiz_closed", {"quiz_id": quiz_id, "by": by,
                                                 "results": results, "scores": points,
                                                 "totals": dict(state.scores)})

    async def on_answer_quiz(self, client: Client, payload: dict[str, Any]) -> dict[str, Any]:
        quiz_id, question_id, choice = fields(
            payload, quiz_id=ID, question_id=ID, choice=Field((int,), min_value=0))
        room, pid = self.joined(client)

        def command(r: Room) -> RoomEvent:
            state: PraticoState = r.state
            me = state.participants.get(pid)
            if me is None:
                raise AppError("forbidden", "join a room first")
            if me.role == TRAINER:
                raise AppError("forbidden", "the trainer does not answer quizzes")
            quiz, _question, answer = state.answer(pid, quiz_id, question_id, choice, self.now())
            self.mark_dirty(r)
            return self.event(state, "quiz_answered", {
                "quiz_id": quiz_id, "question_id": question_id, "participant_id": pid,
                "display_name": me.display_name, "choice": choice, "correct": answer.correct,
                "response_time_ms": round((answer.at - quiz.launched_at) * 1000)})

        event = await room.call(command)
        # Durable before the ack. Shielded (and bounded): a caller cancelled
        # half-way must not leave an answer in the room that is neither
        # acknowledged nor undone.
        failure: str | None = None
        with trio.CancelScope(shield=True):
            with trio.move_on_after(30) as timeout:
                try:
                    await self.services.stores.events.append_durable(event)
                except StorageError as exc:
                    failure = str(exc)
            if timeout.cancelled_caught:
                failure = "durable write timed out"
            if failure is not None:
                log.error("answer of %s to %s/%s not durable: %s", pid, quiz_id, question_id,
                          failure)
                try:
                    await room.call(lambda r: self._cmd_undo_answer(r, pid, quiz_id,
                                                                    question_id))
                except AppError:
                    pass
        if failure is not None:
            raise AppError("unavailable", "the answer could not be stored; try again")
        return {"accepted": True, "quiz_id": quiz_id, "question_id": question_id}

    def _cmd_undo_answer(self, room: Room, pid: str, quiz_id: str, question_id: str) -> None:
        room.state.undo_answer(pid, quiz_id, question_id)
        self.mark_dirty(room)

    # -- chat -------------------------------------------------------------------------------

    async def on_chat_send(self, client: Client, payload: dict[str, Any]) -> dict[str, Any]:
        limit = self.config.limits.max_chat_chars
        (text,) = fields(payload, text=Field((str,), min_len=1, max_len=limit))
        if not text.strip():
            raise AppError("invalid_payload", "text: blank")
        if "\x00" in text:
            raise AppError("invalid_payload", "text: contains NUL")
        room, pid = self.joined(client)

        def command(r: Room) -> tuple[dict[str, Any], RoomEvent]:
            state: PraticoState = r.state
            me = state.participants.get(pid)
            if me is None:
                raise AppError("forbidden", "join a room first")
            rt = self.runtime(r)
            now = trio.current_time()
            bucket = rt.chat_buckets.get(pid)
            if bucket is None:
                bucket = rt.chat_buckets[pid] = TokenBucket(CHAT_RATE_PER_S, CHAT_BURST, now)
            if not bucket.take(now):
                raise AppError("rate_limited", "too many chat messages",
                               retry_after=round(bucket.retry_after(), 3))
            message = {"id": str(uuid.uuid4()), "participant_id": pid,
                       "display_name": me.display_name, "text": text, "ts": iso(self.now())}
            state.chat.append(message)
            self.changed(r)
            r.broadcast("chat_message", message)
            return message, self.event(state, "chat_message", {
                "message_id": message["id"], "participant_id": pid, "chars": len(text)})

        message, event = await room.call(command)
        await self._store_chat(room.room_id, message)
        await self.record([event])
        return {"message_id": message["id"]}

    async def _store_chat(self, room_id: str, message: dict[str, Any]) -> None:
        repos = _repos(self.services)
        if repos is None:
            return
        from pratico_daemon.storage.repos import ChatMessage

        try:
            await repos.chat.append(ChatMessage(
                room_id=uuid.UUID(room_id), participant_id=message["participant_id"],
                text=message["text"], display_name=message["display_name"],
                id=uuid.UUID(message["id"]), ts=dt.datetime.fromisoformat(message["ts"])))
        except (StorageError, LookupError) as exc:
            log.warning("chat message of room %s not stored: %s", room_id, exc)

    # -- the end ------------------------------------------------------------------------------

    async def end_room(self, room_id: str, user_id: str | None, reason: str,
                       keep: str | None = None) -> bool:
        """End a live room: `session_ended`, connections closed, then the cleanup.

        Returns False when the room was not live (already ended). The caller
        waits for the cleanup, which runs in the namespace's nursery so that it
        completes even if the caller is cancelled (a connection closing).
        """
        room = self.services.rooms.get(room_id) if self.services.rooms else None
        if room is None or room.kind != KIND:
            return False
        try:
            event = await room.call(lambda r: self._cmd_end(r, user_id, reason, keep))
        except AppError:
            return False
        done = trio.Event()
        self.spawn(self._cleanup, room_id, event, done)
        await done.wait()
        return True

    def _cmd_end(self, room: Room, user_id: str | None, reason: str,
                 keep: str | None = None) -> RoomEvent:
        state: PraticoState = room.state
        room.broadcast("session_ended", {"room_id": state.room_id, "reason": reason})
        for member in list(room.members.values()):
            data = getattr(member, "data", None)
            if isinstance(data, dict):
                data.pop("pratico", None)
            disconnect = getattr(member, "disconnect_soon", None)
            if disconnect is not None and member.member_id != keep:
                disconnect("session ended")
        present = [p.participant_id for p in state.participants.values() if p.connected]
        for participant in state.participants.values():
            participant.sids.clear()
        room.members.clear()
        if self.names.get(state.name) == room.room_id:
            del self.names[state.name]
        room.end()
        return self.event(state, "session_ended", {
            "reason": reason, "ended_by": user_id, "present": present,
            "scores": dict(state.scores)}, user_id=state.created_by)

    async def _cleanup(self, room_id: str, ended: RoomEvent | None, done: trio.Event) -> None:
        """Record the end, then delete checkpoint, `rooms` row and chat (retrying)."""
        try:
            if ended is not None:
                await self.record([ended])
            checkpointer = _checkpointer(self.services)
            if checkpointer is not None:
                checkpointer.forget(room_id)
            repos = _repos(self.services)
            for delay in (*CLEANUP_BACKOFF_S, None):
                try:
                    if checkpointer is None:
                        await self.services.stores.checkpoints.delete(room_id)
                    if repos is not None:
                        await repos.rooms.delete(uuid.UUID(room_id))
                        await repos.chat.delete_room(uuid.UUID(room_id))
                    break
                except StorageError as exc:
                    if delay is None:
                        log.error("room %s: cleanup gave up: %s", room_id, exc)
                        break
                    log.warning("room %s: cleanup failed (%s); retrying", room_id, exc)
                    await trio.sleep(delay)
        finally:
            done.set()

    # -- create and restore -------------------------------------------------------------------

    async def create_room(self, *, claims: Any, capsule_id: str, title: str,
                          capsule_snapshot: Any, params: dict[str, Any]) -> PraticoState:
        """Launch: the `rooms` row (unique name) and its chat, `session_started`, the actor."""
        from pratico_daemon.storage.repos import RoomRecord

        repos = _repos(self.services)
        if repos is None:
            raise AppError("unavailable", "no room directory configured")
        mode = params.get("navigation_mode", "trainer")
        if mode not in NAVIGATION_MODES:
            raise AppError("invalid_payload", "params.navigation_mode: trainer or free")
        collaboration = params.get("collaboration", {})
        if not isinstance(collaboration, dict):
            raise AppError("invalid_payload", "params.collaboration: expected object")
        room_uuid = uuid.uuid4()
        base = slugs.slugify(title)
        record = None
        try:
            for attempt, name in enumerate(slugs.candidates(base)):
                if attempt >= 1000:
                    raise AppError("conflict", f"no free name for {base!r}")
                try:
                    record = await repos.rooms.create(RoomRecord(
                        name=name, created_by=claims.sub, id=room_uuid,
                        org_id=claims.org_id or None, capsule_id=capsule_id,
                        capsule_snapshot=capsule_snapshot, params=params,
                        created_at=self.stamp()))
                    break
                except Conflict:
                    continue
        except StorageUnavailable:
            raise AppError("unavailable", "the room directory is unavailable") from None
        except InvalidData as exc:
            raise AppError("invalid_payload", f"room refused: {exc}") from None
        assert record is not None
        now = self.now()
        state = PraticoState(
            room_id=str(room_uuid), name=record.name, title=title, capsule_id=capsule_id,
            created_by=claims.sub, org_id=claims.org_id, created_at=now, params=dict(params),
            navigation_mode=mode, collaboration=collaboration)
        state.chat = state.chat.__class__(maxlen=self.config.rooms.chat_history)
        state.capsule_snapshot = capsule_snapshot
        started = self.event(state, "session_started", {
            "name": state.name, "title": title, "capsule_id": capsule_id,
            "created_by": claims.sub, "org_id": claims.org_id, "params": params})
        try:
            await self.services.stores.events.append_durable(started)
        except InvalidData as exc:  # e.g. a NUL character: the caller's data, not an outage
            await _quietly(repos.rooms.delete(room_uuid))
            raise AppError("invalid_payload", f"room refused: {exc}") from None
        except StorageError as exc:
            await _quietly(repos.rooms.delete(room_uuid))
            raise AppError("unavailable", f"session could not be recorded: {exc}") from None
        await self.open_room(state)
        return state

    async def restore(self, checkpoint: Checkpoint) -> Room | None:
        """Re-open a room from its checkpoint (daemon start); None when it has ended.

        The capsule document comes back from the `rooms` row; an open quiz's
        deadline is re-armed at its original time (closing at once if passed).
        """
        state = PraticoState.from_snapshot(dict(checkpoint.state))
        repos = _repos(self.services)
        if repos is not None:
            record = await repos.rooms.get(uuid.UUID(state.room_id))
            if record is None:  # ended (its row is gone) after its last checkpoint
                log.info("checkpoint of ended room %s dropped", state.room_id)
                await _quietly(self.services.stores.checkpoints.delete(state.room_id))
                return None
            state.capsule_snapshot = record.capsule_snapshot
            state.name = record.name
        replayed, ended = await self._catch_up(state)
        if ended:
            log.info("room %s ended after its last checkpoint: finishing its cleanup",
                     state.room_id)
            done = trio.Event()
            self.spawn(self._cleanup, state.room_id, None, done)
            await done.wait()
            return None
        if repos is not None:
            try:
                recent = await repos.chat.recent(uuid.UUID(state.room_id),
                                                 limit=self.config.rooms.chat_history)
            except StorageError as exc:
                log.warning("room %s: chat history not reloaded: %s", state.room_id, exc)
            else:
                state.chat = deque((_chat_json(m) for m in recent),
                                   maxlen=self.config.rooms.chat_history)
        log.info("room %s (%s) restored at version %d (+%d events replayed)",
                 state.room_id, state.name, state.version, replayed)
        return await self.open_room(state)

    async def _catch_up(self, state: PraticoState) -> tuple[int, bool]:
        """Replay the durable events newer than the checkpoint (see `replay.py`)."""
        after = uuid.UUID(state.last_event) if state.last_event else None
        replayed, ended = 0, False
        while not ended:
            page = await self.services.stores.events.read(state.room_id, after=after,
                                                          limit=1000)
            n, ended = apply_events(state, page)
            replayed += n
            if len(page) < 1000:
                break
            after = page[-1].id
        return replayed, ended

    async def rename(self, room_id: str, new_title: str) -> str:
        """Slugify `new_title`, take it in the directory (409 if taken), update the room."""
        room = self.room(room_id)
        name = slugs.slugify(new_title)
        repos = _repos(self.services)
        if repos is None:
            raise AppError("unavailable", "no room directory configured")
        old = room.state.name
        if name != old:
            try:
                changed = await repos.rooms.rename(uuid.UUID(room_id), name)
            except Conflict:
                raise AppError("conflict", f"the name {name!r} is taken") from None
            except StorageUnavailable:
                raise AppError("unavailable", "the room directory is unavailable") from None
            if not changed:
                raise AppError("not_found", "room not found or ended")

        def command(r: Room) -> list[RoomEvent]:
            state: PraticoState = r.state
            if self.names.get(state.name) == r.room_id:
                del self.names[state.name]
            state.name = name
            self.names[name] = r.room_id
            self.changed(r)
            r.broadcast("room_renamed", {"name": name, "link": self.link(name)})
            return [self.event(state, "room_renamed", {"name": name, "previous": old})]

        await self.record(await room.call(command))
        return name


async def _close_later(client: Client) -> None:
    client.disconnect_soon("session ended")


def _questions(raw: list[Any]) -> list[Question]:
    questions: list[Question] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        where = f"questions[{i}]"
        if not isinstance(item, dict):
            raise AppError("invalid_payload", f"{where}: expected object")
        try:
            qid, text, choices, correct = fields(
                item, id=ID, text=Field((str,), max_len=4000),
                choices=Field((list,), min_len=1, max_len=MAX_CHOICES),
                correct=Field((int,), min_value=0))
        except AppError as exc:
            raise AppError("invalid_payload", f"{where}.{exc.message}") from None
        if any(not isinstance(c, str) or len(c) > 1000 for c in choices):
            raise AppError("invalid_payload", f"{where}.choices: strings of at most 1000")
        if correct >= len(choices):
            raise AppError("invalid_payload", f"{where}.correct: not a choice index")
        if qid in seen:
            raise AppError("invalid_payload", f"{where}.id: duplicate {qid!r}")
        seen.add(qid)
        questions.append(Question(qid, text, list(choices), correct))
    return questions


def _chat_json(message: Any) -> dict[str, Any]:
    return {"id": str(message.id), "participant_id": message.participant_id,
            "display_name": message.display_name, "text": message.text,
            "ts": message.ts.astimezone(dt.UTC).isoformat(timespec="milliseconds")}


def _repos(services: Any) -> Any:
    stores = services.stores
    return getattr(stores, "repos", None) if stores is not None else None


def _checkpointer(services: Any) -> Any:
    found = getattr(services, "checkpointer", None)
    if found is None and services.stores is not None:
        found = getattr(services.stores, "checkpointer", None)
    return found


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except StorageError as exc:
        log.warning("ignored storage error: %s", exc)
