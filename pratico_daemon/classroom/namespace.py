"""The `/classroom` namespace: lessons, seats, teacher presence, managers (PROTOCOL.md §2).

Who is on a connection is decided once, at connect, and kept in `client.data`:
`role` (teacher | student | manager), `org_id` (from the token; for an
anonymous student the query's, if any) and `client_id` (the token's subject,
or for an anonymous student its sid, until an `access_token` binds a user).
Every event handler checks the payload (`validate.fields`), then who may do
it, and only then changes anything, so an ERROR ack means nothing changed.

Presence (teachers): `alive:org_{org}_user_{user}` is `{login_time, state}`.
A teacher may hold several connections; presence turns `disconnect` (with the
grace TTL) when the last one on this node drops, and `connect` again (TTL
removed) when one comes back. When the key expires, the expiry watcher (`run`)
ends the teacher's live lessons with one conditional UPDATE and tells the
org's managers `logout` — see `presence.py`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from pratico_daemon import logs
from pratico_daemon.auth import Claims
from pratico_daemon.backoff import Backoff
from pratico_daemon.classroom import keys
from pratico_daemon.classroom import rooms as croom
from pratico_daemon.classroom.analytics import AnalyticsSink
from pratico_daemon.classroom.checks import checked_fields
from pratico_daemon.classroom.concurrency import together
from pratico_daemon.classroom.lessons import LessonBook
from pratico_daemon.classroom.locks import KeyedLock
from pratico_daemon.classroom.node_leases import NodeLeases
from pratico_daemon.errors import AppError
from pratico_daemon.rooms.room import Room
from pratico_daemon.session.namespace import Client, Identity, Namespace
from pratico_daemon.session.validate import ID, Field, one_of, optional
from pratico_daemon.storage.expirations import ExpiryFeed
from pratico_daemon.storage.protocols import (
    RESYNC,
    Conflict,
    HashWrite,
    InvalidData,
    RoomEvent,
    StorageError,
    StorageUnavailable,
)
from pratico_daemon.storage.repos import Lesson, NotFound

log = logs.get("classroom")

TOKEN = Field((str,), min_len=1, max_len=8192)
DISPLAY_NAME = Field((str,), min_len=1, max_len=100)
SEAT_ID = Field((str, int), min_len=1, max_len=6)
# Several daemons all see one expiry; the first to claim it tells the managers.
# Every node hears the notification within ~100 ms, so a few seconds is plenty.
EXPIRY_CLAIM_TTL_S = 10.0
# How long one join's request creating a seat hash stands for the joins after it.
SEATS_SENT_S = 5.0
# Presence writes on disconnect run shielded (a drain must not leave a teacher
# `connect` forever) but bounded, so a dead Redis cannot hold the drain.
DISCONNECT_WRITE_TIMEOUT_S = 5.0


def retry_after(ttl_s: float) -> int:
    """Whole seconds a refused client should wait (at least 1 while the key exists)."""
    return max(1, math.ceil(ttl_s))


class ClassroomNamespace(Namespace):
    name = croom.NAMESPACE

    def __init__(self, services: Any, lessons: LessonBook | None = None,
                 analytics: AnalyticsSink | None = None) -> None:
        super().__init__(services)
        self._lessons = lessons
        self.analytics = analytics or AnalyticsSink(services.config.analytics)
        self.grace_s = services.config.presence.disconnect_grace_s
        self.cooldown_s = services.config.presence.force_logout_cooldown_s
        self.max_room_members = services.config.limits.max_room_members
        self._user_locks = KeyedLock()
        self._lesson_locks = KeyedLock()
        self._in_grace: set[tuple[str, str]] = set()
        """(org, user) whose alive key this node put on the grace TTL (for RESYNC)."""
        self._seats_sent: dict[str, float] = {}
        """lesson id → until when this node's own request creating its seat hash
        covers later joins (see `_seat_write`)."""
        self._nursery: trio.Nursery | None = None
        self.expired_handled = 0
        self.leases = NodeLeases(lambda: self.presence, services.node_id,
                                 services.config.presence.node_lease_s,
                                 enabled=services.config.redis.url is not None)
        self.events.update({
            "join_lesson": self.join_lesson,
            "set_student_name": self.set_student_name,
            "logout": self.logout,
            "force_logout": self.force_logout,
        })

    def __repr__(self) -> str:
        return (f"<ClassroomNamespace {len(self.directory)} clients "
                f"{len(self._in_grace)} in grace>")

    @property
    def lessons(self) -> LessonBook:
        """Over the stores' lesson repository (the daemon opens stores after building us)."""
        if self._lessons is None:
            self._lessons = LessonBook(self.services.stores.repos.lessons)
        return self._lessons

    @property
    def presence(self) -> Any:
        return self.services.stores.presence

    # -- background work ---------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The analytics sender and the presence-expiry watcher, for the daemon's lifetime."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.analytics.run)
            feed = getattr(self.services.stores, "expirations", None)
            if feed is not None:
                nursery.start_soon(self._adopt_grace)
                nursery.start_soon(self.leases.run, self._adopt_orphan,
                                   self._reassert_teachers, self._live_teachers)
                receive = feed.receive if isinstance(feed, ExpiryFeed) else feed
                nursery.start_soon(self._watch_expirations, receive)
            task_status.started()
            await trio.sleep_forever()

    async def _adopt_grace(self) -> None:
        """After a restart, teachers left in grace by an earlier run are ours to watch.

        Redis may not answer yet (the daemon starts without its stores, DESIGN.md):
        retry with a capped backoff instead of failing the start.
        """
        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                for key in await self.presence.scan(keys.ALIVE_PATTERN):
                    parsed = keys.parse_alive(key)
                    if parsed is not None and (await self.presence.hgetall(key)).get(
                            "state") == "disconnect":
                        self._in_grace.add(parsed)
                return
            except StorageError as exc:
                log.warning("teachers in grace not adopted yet: %s (retrying in %.1fs)",
                            exc, backoff.delay)
                await backoff.wait()

    async def _watch_expirations(self, receive: trio.MemoryReceiveChannel[str]) -> None:
        async for name in receive:
            try:
                if name == RESYNC:
                    await self._resync()
                else:
                    await self.on_expired(name)
            except StorageError as exc:
                # The key is gone already; a later RESYNC cannot find it again, so
                # keep it in the grace set and retry on the next RESYNC.
                log.warning("presence expiry of %s not handled yet: %s", name, exc)

    async def _resync(self) -> None:
        """Notifications may have been lost: any key we put in grace that is gone expired."""
        alive_now = set(await self.presence.scan(keys.ALIVE_PATTERN))
        for org_id, user_id in sorted(self._in_grace):
            key = keys.alive(org_id, user_id)
            if key not in alive_now:
                await self.on_expired(key)

    async def on_expired(self, key: str) -> None:
        """An alive key expired: end the teacher's live lessons; the winner tells the managers."""
        parsed = keys.parse_alive(key)
        if parsed is None:
            return
        org_id, user_id = parsed
        async with self._user_locks.hold(f"{org_id}/{user_id}"):
            if await self.presence.exists(key):
                self._in_grace.discard(parsed)
                return  # reconnected meanwhile: a fresh key, the lesson stays
            ended, claimed = await together(
                lambda: self.lessons.end_live_lessons(org_id, user_id),
                lambda: self.presence.set(f"expired:{key}", self.services.node_id,
                                          ttl_s=EXPIRY_CLAIM_TTL_S, nx=True),
            )
            self._in_grace.discard(parsed)
        for lesson_id in ended:
            await self._record_soft(RoomEvent(lesson_id, "lesson_ended", {
                "reason": "teacher_presence_expired"}, user_id=user_id))
            await croom.call_if_open(self.services.rooms, croom.lesson_room_id(lesson_id),
                                     croom.close("lesson_ended", {"lesson_id": lesson_id}))
        if claimed:
            await self._record_soft(RoomEvent(f"org:{org_id}", "teacher_expired",
                                              {"lessons_ended": ended}, user_id=user_id))
            await self._tell_managers(org_id, "logout", {"user_id": user_id})
        self.expired_handled += 1  # counted once everything above is done (tests wait on it)

    # -- connect / disconnect -------------------------------------------------------------------

    async def connect(self, client: Client, auth: Mapping[str, Any]) -> Mapping[str, Any] | None:
        query = client.query
        claims = client.identity.claims
        role = query.get("role") or (claims.role if claims else "")
        org_q = query.get("org_id") or None
        if org_q is not None and len(org_q) > 200:
            raise AppError("invalid_payload", "org_id: longer than 200")
        if query.get("product_type") == "manager":
            return await self._connect_manager(client, claims, org_q)
        if role == "teacher":
            return await self._connect_teacher(client, claims, org_q)
        if role == "student":
            return await self._connect_student(client, claims, org_q)
        if role == "admin":
            raise AppError("forbidden", "admins connect as managers (product_type=manager)")
        raise AppError("invalid_payload", "role: not one of ['teacher', 'student', 'admin']")

    @staticmethod
    def _require(claims: Claims | None, role: str, org_q: str | None) -> Claims:
        if claims is None:
            raise AppError("unauthorized", f"a {role} connection needs a token")
        if claims.role != role:
            raise AppError("forbidden", f"token role is {claims.role}, not {role}")
        if not claims.org_id:
            raise AppError("forbidden", "token has no org_id")
        if org_q is not None and org_q != claims.org_id:
            raise AppError("forbidden", "org_id does not match the token")
        return claims

    async def _connect_manager(self, client: Client, claims: Claims | None,
                               org_q: str | None) -> Mapping[str, Any]:
        claims = self._require(claims, "admin", org_q)
        client.data.update(role="manager", org_id=claims.org_id, client_id=claims.sub)
        room_id = croom.manager_room_id(claims.org_id)
        await croom.open_and_call(self.services.rooms, room_id,
                                  lambda: self._room(room_id, "managers",
                                                     croom.ManagerState(claims.org_id)),
                                  croom.join(client))
        client.data["manager_room"] = room_id
        self._track("connect", client)
        return {"client_id": claims.sub, "role": "manager"}

    async def _connect_teacher(self, client: Client, claims: Claims | None,
                               org_q: str | None) -> Mapping[str, Any]:
        claims = self._require(claims, "teacher", org_q)
        org_id, user_id = claims.org_id, claims.sub
        async with self._user_locks.hold(f"{org_id}/{user_id}"):
            left = await self.presence.ttl(keys.cooldown(org_id, user_id))
            if left is not None and left > 0:
                raise AppError("cooldown", "logged out by a manager; try again later",
                               retry_after=retry_after(left))
            client.data.update(role="teacher", org_id=org_id, client_id=user_id)
            reconnect = await self._mark_connected(client)
        self._track("reconnect" if reconnect else "connect", client)
        return {"client_id": user_id, "role": "teacher"}

    async def _mark_connected(self, client: Client) -> bool:
        """alive := connect (TTL removed), the `{user_id}` hash, `teacher_connect`.

        Returns True when this is a reconnect within the grace period. Caller
        holds the user's lock.
        """
        org_id, user_id = client.data["org_id"], client.data["client_id"]
        alive = keys.alive(org_id, user_id)
        others = self._other_live_teacher_connections(client)
        previous = await self.presence.hgetall(alive)
        login_time = previous.get("login_time") if others else None
        session: dict[str, str] = {"sid": client.sid, "client_id": user_id, "role": "teacher",
                                   "org_id": org_id}
        if client.data.get("lesson_id"):
            session["lesson_id"] = client.data["lesson_id"]
        await together(
            lambda: self.presence.hset(alive, {"login_time": login_time or str(int(time.time())),
                                               "state": "connect"}),
            lambda: self.presence.persist(alive),
            lambda: self.presence.hset(keys.user(user_id), session,
                                       ttl_s=keys.SESSION_TTL_S),
            lambda: self.leases.hold(org_id, user_id),
        )
        self._in_grace.discard((org_id, user_id))
        client.data["teacher_live"] = True
        if not others:
            await self._tell_managers(org_id, "teacher_connect", {"user_id": user_id})
            self._record_in_background(RoomEvent(
                self._presence_room(client), "teacher_connect", {"sid": client.sid},
                user_id=user_id))
        return previous.get("state") == "disconnect"

    def _live_teacher_connections(self, org_id: str, user_id: str) -> list[Client]:
        """This node's connections that hold the teacher `connect`."""
        return [c for c in self.directory.of_user(user_id)
                if c.data.get("teacher_live") and c.data.get("org_id") == org_id]

    def _other_live_teacher_connections(self, client: Client) -> list[Client]:
        return [c for c in self._live_teacher_connections(client.data["org_id"],
                                                          client.data["client_id"])
                if c.sid != client.sid]

    async def _connect_student(self, client: Client, claims: Claims | None,
                               org_q: str | None) -> Mapping[str, Any]:
        org_id: str | None
        if claims is not None:
            claims = self._require(claims, "student", org_q)
            client_id, org_id = claims.sub, claims.org_id
        else:
            client_id, org_id = client.sid, org_q
        client.data.update(role="student", org_id=org_id, client_id=client_id)
        existed = await self._write_student_session(client)
        self._track("reconnect" if existed else "connect", client)
        return {"client_id": client_id, "role": "student"}

    def _student_session(self, client: Client) -> HashWrite:
        """`{client_id}` reset with this sid, for 24 h (seed 001)."""
        session = {"sid": client.sid, "client_id": client.data["client_id"], "role": "student",
                   "org_id": client.data.get("org_id") or ""}
        if client.data.get("lesson_id"):
            session["lesson_id"] = client.data["lesson_id"]
        return HashWrite(keys.user(client.data["client_id"]), session, keys.SESSION_TTL_S)

    async def _write_student_session(self, client: Client) -> bool:
        """Reset `{client_id}`; True if the key existed (a reconnect)."""
        (existed,) = await self.presence.hset_many([self._student_session(client)])
        return existed

    async def disconnect(self, client: Client, reason: str) -> None:
        """The connection dropped (it may still come back: `reconnected` or `gone` follows)."""
        role = client.data.get("role")
        if role is None:
            return
        self._track("disconnect", client, reason=reason)
        if role == "teacher" and client.data.get("teacher_live"):
            client.data["teacher_live"] = False
            with trio.CancelScope(shield=True), trio.move_on_after(DISCONNECT_WRITE_TIMEOUT_S):
                try:
                    await self._mark_disconnected(client)
                except StorageError as exc:
                    log.warning("teacher %s disconnect not recorded: %s",
                                client.data["client_id"], exc)

    async def _mark_disconnected(self, client: Client) -> None:
        org_id, user_id = client.data["org_id"], client.data["client_id"]
        async with self._user_locks.hold(f"{org_id}/{user_id}"):
            if client.data.get("logged_out") or self._other_live_teacher_connections(client):
                return
            # The hold goes last: if a write below fails, the lease renewal finds
            # it without a connection here and finishes the job (`_adopt_orphan`).
            # No grace while another node holds the teacher (it keeps the presence),
            # nor once the alive key is gone (logged out elsewhere).
            grace = (not await self.leases.held_elsewhere(org_id, user_id)
                     and await self.presence.exists(keys.alive(org_id, user_id)))
            if grace:
                await self._start_grace(org_id, user_id)
            await self.leases.release(org_id, user_id)
            if not grace:
                return
        await self._tell_managers(org_id, "teacher_disconnect", {"user_id": user_id})
        await self._record_soft(RoomEvent(self._presence_room(client), "teacher_disconnect",
                                          {"sid": client.sid, "grace_s": self.grace_s},
                                          user_id=user_id))

    async def _adopt_orphan(self, org_id: str, user_id: str, node: str) -> bool:
        """A teacher left `connect` by a node that died: into grace, as a disconnect.

        `node` may be this node's own id: a hold of its previous run, or one
        whose disconnect could not be written. The hold is let go here, under
        the teacher's lock, unless the teacher is connected here again.
        """
        async with self._user_locks.hold(f"{org_id}/{user_id}"):
            if self._live_teacher_connections(org_id, user_id):
                return False  # back on this node already
            if node == self.leases.node_id:
                await self.leases.release(org_id, user_id)
            if (await self.presence.hgetall(keys.alive(org_id, user_id))).get("state") \
                    != "connect":
                return False  # in grace, logged out or expired since
            await self._start_grace(org_id, user_id)
        session = await self.presence.hgetall(keys.user(user_id))
        await self._tell_managers(org_id, "teacher_disconnect", {"user_id": user_id})
        await self._record_soft(RoomEvent(session.get("lesson_id") or f"org:{org_id}",
                                          "teacher_disconnect",
                                          {"node": node, "grace_s": self.grace_s},
                                          user_id=user_id))
        return True

    async def _start_grace(self, org_id: str, user_id: str) -> None:
        """alive := disconnect, with the grace TTL (the caller holds the teacher's lock)."""
        await self.presence.hset(keys.alive(org_id, user_id), {"state": "disconnect"},
                                 ttl_s=self.grace_s)
        self._in_grace.add((org_id, user_id))

    def _live_teachers(self) -> set[tuple[str, str]]:
        """(org, user) of every teacher connected to this node (the lease's holds)."""
        return {(c.data["org_id"], c.data["client_id"]) for c in self.directory
                if c.data.get("teacher_live")}

    async def _reassert_teachers(self) -> None:
        """Every teacher connected here reads `connect` (called at each lease renewal).

        Another node may have put one in grace: after a lapse of our lease, or
        when its own last connection dropped while this one connected.
        """
        for org_id, user_id in sorted(self._live_teachers()):
            async with self._user_locks.hold(f"{org_id}/{user_id}"):
                if not self._live_teacher_connections(org_id, user_id):
                    continue
                alive = keys.alive(org_id, user_id)
                previous = await self.presence.hgetall(alive)
                if previous.get("state") == "connect":
                    continue
                login_time = previous.get("login_time") or str(int(time.time()))
                await self.presence.hset(alive, {"login_time": login_time, "state": "connect"})
                await self.presence.persist(alive)
                self._in_grace.discard((org_id, user_id))
            await self._tell_managers(org_id, "teacher_connect", {"user_id": user_id})

    async def reconnected(self, client: Client) -> None:
        """Back within the recovery window: a teacher's presence turns `connect` again."""
        role = client.data.get("role")
        if role == "teacher" and not client.data.get("logged_out"):
            async with self._user_locks.hold(f"{client.data['org_id']}/{client.data['client_id']}"):
                await self._mark_connected(client)
        if role is not None:
            self._track("reconnect", client)

    async def gone(self, client: Client) -> None:
        """The client will not come back: leave its lesson and manager rooms."""
        with trio.CancelScope(shield=True), trio.move_on_after(DISCONNECT_WRITE_TIMEOUT_S):
            await self._leave_lesson(client, "disconnect")
            room_id = client.data.pop("manager_room", None)
            if room_id is not None:
                await croom.call_if_open(self.services.rooms, room_id, croom.leave(client.sid))

    async def _leave_lesson(self, client: Client, reason: str) -> None:
        lesson_id = client.data.pop("lesson_id", None)
        if lesson_id is None:
            return
        was_in = await croom.call_if_open(self.services.rooms, croom.lesson_room_id(lesson_id),
                                          croom.leave(client.sid))
        if was_in:
            await self._record_soft(RoomEvent(lesson_id, "lesson_left", {
                "role": client.data.get("role"), "sid": client.sid, "reason": reason},
                user_id=client.data.get("client_id")))

    # -- client events --------------------------------------------------------------------------

    async def join_lesson(self, client: Client, payload: dict[str, Any]) -> Mapping[str, Any]:
        user_id, lesson_id, role, access_token = checked_fields(
            payload, user_id=ID, lesson_id=ID, role=one_of("teacher", "student"),
            access_token=optional(TOKEN))
        mine = client.data.get("role")
        if mine not in ("teacher", "student"):
            raise AppError("forbidden", "only teacher and student connections join lessons")
        if role != mine:
            raise AppError("forbidden", f"this connection is a {mine}'s")
        bind: Claims | None = None
        if access_token is not None and mine == "student":
            bind = self._student_token(client, access_token)
        client_id = bind.sub if bind is not None else client.data["client_id"]
        org_id = bind.org_id if bind is not None else client.data.get("org_id")
        if user_id != client_id:
            raise AppError("forbidden", "user_id is not this connection's user")
        student_id = client_id if mine == "student" else None
        lesson, seat, seats = await self._lesson_seat_and_seats(lesson_id, student_id)
        if org_id and lesson.org_id != org_id:
            raise AppError("forbidden", "the lesson belongs to another organisation")
        if mine == "teacher" and lesson.teacher_id != user_id:
            raise AppError("forbidden", "another teacher's lesson")
        if lesson.status == "ended":
            raise AppError("lesson_ended", "the lesson has ended")

        # Checks passed: from here on the join happens.
        if bind is not None:
            self._bind_student(client, bind)
        previous = client.data.get("lesson_id")
        if previous is not None and previous != lesson_id:
            await self._leave_lesson(client, "moved")
        room_id = croom.lesson_room_id(lesson_id)
        await croom.open_and_call(
            self.services.rooms, room_id,
            lambda: self._room(room_id, "lesson", croom.LessonState(
                lesson_id, lesson.org_id, lesson.teacher_id)),
            croom.enter_lesson(client, mine, client_id))
        client.data["lesson_id"] = lesson_id
        client.data["seat_count"] = lesson.seat_count
        # Every write of the join at once: one Redis request (a transaction), one
        # Postgres group commit; a class arriving together needs no other task.
        joined = RoomEvent(lesson_id, "lesson_joined", {
            "role": mine, "sid": client.sid, "seat": seat}, user_id=client_id)
        hashes: list[HashWrite] = []
        writes: list[Callable[[], Awaitable[Any]]] = [
            lambda: self._record(joined), lambda: self.presence.hset_many(hashes)]
        seat_write = self._seat_write(lesson, seat, student_id, seats)
        if seat_write is not None:
            hashes.append(seat_write)
        if mine == "teacher":
            hashes.append(HashWrite(keys.lesson_teacher(lesson_id), {user_id: client.sid},
                                    keys.SESSION_TTL_S))
            hashes.append(HashWrite(keys.user(user_id), {
                "sid": client.sid, "client_id": user_id, "role": "teacher",
                "org_id": lesson.org_id, "lesson_id": lesson_id}, keys.SESSION_TTL_S))
            if lesson.status == "scheduled":
                writes.append(lambda: self.lessons.start(lesson_id))
        else:
            hashes.append(HashWrite(keys.lesson_student(lesson_id), {client_id: client.sid},
                                    keys.SESSION_TTL_S))
            hashes.append(self._student_session(client))
        try:
            results = await together(*writes)
        except StorageUnavailable as exc:
            if seat_write is not None and seat_write.defaults:
                self._seats_sent.pop(lesson_id, None)  # the next join creates them again
            await self._leave_lesson(client, "unavailable")
            raise AppError("unavailable", f"storage unavailable: {exc}") from None
        if bind is not None and mine == "student" and results[1][-1]:
            self._track("reconnect", client)  # `{client_id}` existed: this user came back
        if not seats and lesson.seat_count > 0:
            seats = {str(i): "" for i in range(1, lesson.seat_count + 1)}
        if seat is not None and student_id is not None:
            seats[str(seat)] = student_id
        return {"lesson_id": lesson_id, "seat": seat, "seats": seats, "client_id": client_id}

    def _seat_write(self, lesson: Lesson, seat: int | None, student_id: str | None,
                    seats: dict[str, str]) -> HashWrite | None:
        """This join's write to `lesson_seat_{id}`, if it needs one.

        Seed 001: the first join creates `{1: "", …}`. Only missing seats are
        filled, in the same request as the join's own seat, so joins arriving
        together need no lock and never wipe a seat another one just took,
        whichever request Redis applies first. A class arriving together reads
        the hash before any of them created it: once one join of this node has
        sent the creating request, the others write their own seat only for a
        few seconds (32 fewer commands each); a creating request that failed
        lets the next join send it again.
        """
        mine = {str(seat): student_id} if seat is not None and student_id is not None else {}
        if not seats and lesson.seat_count > 0:
            now = trio.current_time()
            if self._seats_sent.get(lesson.id, 0.0) <= now:
                if len(self._seats_sent) > 10_000:
                    self._seats_sent = {k: t for k, t in self._seats_sent.items() if t > now}
                self._seats_sent[lesson.id] = now + SEATS_SENT_S
                empty = {str(i): "" for i in range(1, lesson.seat_count + 1)}
                return HashWrite(keys.lesson_seat(lesson.id), mine, defaults=empty)
        if mine and seats.get(str(seat)) != student_id:
            return HashWrite(keys.lesson_seat(lesson.id), mine)
        return None

    def _student_token(self, client: Client, token: str) -> Claims:
        claims = self.services.auth.verify(token)
        if claims.role != "student":
            raise AppError("forbidden", f"access_token role is {claims.role}, not student")
        current = client.identity.claims
        if current is not None and current.sub != claims.sub:
            raise AppError("forbidden", "access_token is another user's")
        return claims

    def _bind_student(self, client: Client, claims: Claims) -> None:
        old_user = client.identity.user_id
        old_client_id = client.data["client_id"]
        client.identity = Identity(claims)
        self.directory.rebind(client, old_user)
        client.data.update(client_id=claims.sub, org_id=claims.org_id)
        if old_client_id != claims.sub and self._nursery is not None:
            # The anonymous session key named after the sid is no longer anyone's.
            self._nursery.start_soon(self._delete_soft, keys.user(old_client_id))

    async def _lesson_seat_and_seats(self, lesson_id: str, student_id: str | None
                                     ) -> tuple[Lesson, int | None, dict[str, str]]:
        """The lesson, the student's seat and the seat hash.

        One after the other, no task: the lesson comes from the cache for every
        join of a class but the first, so what is left is one Redis read.
        """
        try:
            lesson, seat = await self.lessons.get_with_seat(lesson_id, student_id)
            seats = await self.presence.hgetall(keys.lesson_seat(lesson_id))
        except StorageUnavailable as exc:
            raise AppError("unavailable", f"storage unavailable: {exc}") from None
        if lesson is None:
            raise AppError("lesson_not_found", f"no lesson {lesson_id!r}")
        return lesson, seat, seats

    async def set_student_name(self, client: Client, payload: dict[str, Any]
                               ) -> Mapping[str, Any]:
        lesson_id, display_name, seat_id, student_id = checked_fields(
            payload, lesson_id=ID, display_name=DISPLAY_NAME, seat_id=SEAT_ID, student_id=ID)
        if client.data.get("role") != "student":
            raise AppError("forbidden", "only students set their name")
        if client.data.get("lesson_id") != lesson_id:
            raise AppError("forbidden", "join the lesson first")
        if student_id != client.data["client_id"]:
            raise AppError("forbidden", "student_id is not this connection's student")
        seat = _seat_number(seat_id, client.data.get("seat_count", 0))
        if not display_name.strip():
            raise AppError("invalid_payload", "display_name: blank")
        async with self._lesson_locks.hold(lesson_id):
            try:
                change = await self.lessons.take_seat(lesson_id, student_id, seat, display_name)
            except Conflict:
                raise AppError("conflict", f"seat {seat} is another student's") from None
            except NotFound:
                raise AppError("lesson_not_found", f"no lesson {lesson_id!r}") from None
            except InvalidData as exc:
                raise AppError("invalid_payload", str(exc)) from None
            except StorageUnavailable as exc:
                raise AppError("unavailable", f"lessons unavailable: {exc}") from None
            update = {str(seat): student_id}
            if change.previous_seat is not None:
                update[str(change.previous_seat)] = ""
            await self.presence.hset(keys.lesson_seat(lesson_id), update)
        told = await croom.call_if_open(
            self.services.rooms, croom.lesson_room_id(lesson_id),
            croom.tell_teachers("set_student_name", {
                "display_name": display_name, "seat_id": seat_id, "student_id": student_id}))
        await self._record_soft(RoomEvent(lesson_id, "student_named", {
            "seat": seat, "display_name": display_name}, user_id=student_id))
        return {"lesson_id": lesson_id, "seat_id": seat, "display_name": display_name,
                "student_id": student_id, "teachers_told": told or 0}

    async def logout(self, client: Client, payload: dict[str, Any]) -> Mapping[str, Any]:
        user_id, org_id = checked_fields(payload, user_id=ID, org_id=ID)
        if client.data.get("role") != "teacher":
            raise AppError("forbidden", "only a teacher logs out")
        if user_id != client.data["client_id"] or org_id != client.data["org_id"]:
            raise AppError("forbidden", "a teacher logs out only itself")
        connections = [c for c in self.directory.of_user(user_id)
                       if c.data.get("role") == "teacher" and c.data.get("org_id") == org_id]
        if client not in connections:
            connections.append(client)
        async with self._user_locks.hold(f"{org_id}/{user_id}"):
            for c in connections:
                c.data["logged_out"] = True
                c.data["teacher_live"] = False
            await self.presence.delete(keys.alive(org_id, user_id))
            self._in_grace.discard((org_id, user_id))
            await self.leases.release(org_id, user_id)
        await self._tell_managers(org_id, "logout", {"user_id": user_id})
        await self._record_soft(RoomEvent(self._presence_room(client), "teacher_logout",
                                          {"sid": client.sid}, user_id=user_id))
        for c in connections:
            self._disconnect_after_ack(c, "logout")
        return {"user_id": user_id}

    async def force_logout(self, client: Client, payload: dict[str, Any]) -> Mapping[str, Any]:
        user_id, org_id = checked_fields(payload, user_id=ID, org_id=ID)
        if client.data.get("role") != "manager":
            raise AppError("forbidden", "only a manager forces a logout")
        if org_id != client.data["org_id"]:
            raise AppError("forbidden", "a manager acts in its own organisation only")
        await self.presence.set(keys.cooldown(org_id, user_id), str(int(time.time())),
                                ttl_s=self.cooldown_s)
        targets = [c for c in self.directory.of_user(user_id)
                   if c.data.get("role") == "teacher" and c.data.get("org_id") == org_id]
        for target in targets:
            target.emit("force_logout", {"user_id": user_id})
            target.disconnect_soon("force_logout")
        await self._record_soft(RoomEvent(f"org:{org_id}", "teacher_force_logout", {
            "by": client.data["client_id"], "connections": len(targets)}, user_id=user_id))
        return {"user_id": user_id, "cooldown_s": self.cooldown_s,
                "disconnected": len(targets)}

    # -- helpers --------------------------------------------------------------------------------

    def _room(self, room_id: str, kind: str, state: Any) -> Room:
        return Room(room_id, kind, self.name, state=state, max_members=self.max_room_members)

    async def _tell_managers(self, org_id: str, name: str, payload: Mapping[str, Any]) -> None:
        await croom.call_if_open(self.services.rooms, croom.manager_room_id(org_id),
                                 croom.tell_all(name, payload))

    @staticmethod
    def _presence_room(client: Client) -> str:
        """room_events' room of a presence change: the lesson if any, else the org."""
        return client.data.get("lesson_id") or f"org:{client.data['org_id']}"

    def _track(self, event: str, client: Client, **extra: Any) -> None:
        self.analytics.track(event, client.data.get("client_id") or client.sid, {
            "role": client.data.get("role"), "org_id": client.data.get("org_id"),
            "lesson_id": client.data.get("lesson_id"), "sid": client.sid, **extra})

    def _disconnect_after_ack(self, client: Client, reason: str) -> None:
        """Close `client` once the handler's ack is queued (the handler returns first)."""
        if self._nursery is None:
            client.disconnect_soon(reason)
            return

        async def later() -> None:
            await trio.lowlevel.checkpoint()
            client.disconnect_soon(reason)

        self._nursery.start_soon(later)

    async def _record(self, event: RoomEvent) -> None:
        """A durable event the ack depends on (`unavailable` when it cannot be written)."""
        await self.services.stores.events.append_durable(event)

    def _record_in_background(self, event: RoomEvent) -> None:
        """A presence fact nobody waits for: the connect is acked before it is written."""
        if self._nursery is None:
            return
        self._nursery.start_soon(self._record_soft, event)

    async def _record_soft(self, event: RoomEvent) -> None:
        """A durable event nobody waits for: a failure is logged, not answered."""
        try:
            await self.services.stores.events.append_durable(event)
        except StorageError as exc:
            log.warning("room event %s of %s not recorded: %s", event.type, event.room_id, exc)

    async def _delete_soft(self, key: str) -> None:
        try:
            await self.presence.delete(key)
        except StorageError as exc:
            log.warning("could not delete %s: %s", key, exc)


def _seat_number(seat_id: str | int, seat_count: int) -> int:
    if isinstance(seat_id, str):
        if not seat_id.isdigit():
            raise AppError("invalid_payload", "seat_id: not a seat number")
        seat_id = int(seat_id)
    if not 1 <= seat_id <= seat_count:
        raise AppError("invalid_payload", f"seat_id: not a seat of this lesson (1-{seat_count})")
    return seat_id
