"""The live session in its Room actor: participants, media states, connections.

`LiveSession` is the room's `state`; the functions here are room *commands*
(run by the room's loop, the only writer). They mirror what a database
transaction decided (`repo.Change`) and tell the clients. Delivery is
addressed to users: a room's members are the connections of its joined
participants, found through the namespace's `ClientDirectory` when a user
joins and added when a participant's connection appears later.

`hub.live_by_user` (user → session id) is the index the namespace uses to
route a client's signalling and its connect-time `session-state`. It is only
changed here, inside commands, without awaiting, so a join and a concurrent
connect always meet: either the join finds the connection in the directory,
or the connect finds the user in the index (attaching twice is harmless).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import attrs

from pratico_daemon.conversation.lifecycle import RANK, SessionStatus, Transition
from pratico_daemon.conversation.repo import ParticipantView
from pratico_daemon.errors import AppError
from pratico_daemon.rooms.room import Room
from pratico_daemon.session.directory import ClientDirectory


class Hub(Protocol):
    directory: ClientDirectory
    live_by_user: dict[str, str]


@attrs.define
class LiveSession:
    session_id: str
    slot_id: str
    status: SessionStatus
    participants: dict[str, ParticipantView] = attrs.Factory(dict)

    def __repr__(self) -> str:
        return f"<LiveSession {self.session_id} {self.status.value} {len(self.participants)}>"

    def wire(self) -> dict[str, Any]:
        return {"sessionId": self.session_id, "status": self.status.value,
                "participants": [p.wire() for p in self.participants.values() if not p.recorder]}


def _live(room: Room) -> LiveSession:
    assert isinstance(room.state, LiveSession)
    return room.state


def _sids(hub: Hub, room: Room, user_id: str) -> list[str]:
    return [c.sid for c in hub.directory.of_user(user_id) if c.sid in room.members]


def _attach_user(hub: Hub, room: Room, user_id: str) -> None:
    for client in hub.directory.of_user(user_id):
        room.join(client)
    hub.live_by_user[user_id] = room.room_id


def _advance(live: LiveSession, status: SessionStatus) -> bool:
    if RANK[status] > RANK[live.status]:
        live.status = status
        return True
    return False


def adopt(hub: Hub) -> Callable[[Room], None]:
    """A room restored from the database: index its participants, attach their connections."""

    def command(room: Room) -> None:
        for user_id in _live(room).participants:
            _attach_user(hub, room, user_id)

    return command


def apply_join(hub: Hub, user_id: str, view: ParticipantView,
               transition: Transition | None) -> Callable[[Room], dict[str, Any]]:
    def command(room: Room) -> dict[str, Any]:
        live = _live(room)
        if live.status is SessionStatus.ENDED:
            raise AppError("session_ended", "the session has ended")
        fresh = user_id not in live.participants
        live.participants[user_id] = view
        _attach_user(hub, room, user_id)
        # A recorder (issue 8) is in the room for signalling but is not announced
        # as a participant; how clients learn of it is issue 8's to define.
        if fresh and not view.recorder:
            room.broadcast("participant-joined", {"user": view.wire()},
                           exclude=_sids(hub, room, user_id))
        if transition is not None and _advance(live, transition.target):
            room.broadcast("session-started", {"sessionId": live.session_id})
        return live.wire()

    return command


def apply_leave(hub: Hub, user_id: str,
                transition: Transition | None) -> Callable[[Room], None]:
    def command(room: Room) -> None:
        live = _live(room)
        left = live.participants.pop(user_id, None)
        if left is not None:
            for sid in _sids(hub, room, user_id):
                room.leave(sid)
            if not left.recorder:
                room.broadcast("participant-left", {"userId": user_id})
        if hub.live_by_user.get(user_id) == room.room_id:
            del hub.live_by_user[user_id]
        if transition is not None and transition.target is SessionStatus.ENDED:
            _end(hub, room, transition.reason.value if transition.reason else "ended")

    return command


def apply_end(hub: Hub, reason: str) -> Callable[[Room], None]:
    def command(room: Room) -> None:
        _end(hub, room, reason)

    return command


def _end(hub: Hub, room: Room, reason: str) -> None:
    live = _live(room)
    if not _advance(live, SessionStatus.ENDED):
        return
    room.broadcast("session-ended", {"sessionId": live.session_id, "reason": reason})
    forget(hub, room)
    room.end()


def forget(hub: Hub, room: Room) -> None:
    """Drop the room's users from the index (end of the room; also its on_end hook)."""
    for user_id, session_id in list(hub.live_by_user.items()):
        if session_id == room.room_id:
            del hub.live_by_user[user_id]


def apply_media(hub: Hub, user_id: str, view: ParticipantView) -> Callable[[Room], None]:
    def command(room: Room) -> None:
        live = _live(room)
        if user_id not in live.participants:
            return
        live.participants[user_id] = view
        room.broadcast("media-state-changed", view.wire(), exclude=_sids(hub, room, user_id))

    return command


def attach(hub: Hub, client: Any) -> Callable[[Room], None]:
    """A participant's connection appeared: it joins the room and gets `session-state`."""

    def command(room: Room) -> None:
        live = _live(room)
        user_id = client.identity.user_id
        if user_id in live.participants and live.status is not SessionStatus.ENDED:
            room.join(client)
            client.emit("session-state", live.wire())

    return command


def detach(sid: str) -> Callable[[Room], None]:
    def command(room: Room) -> None:
        room.leave(sid)

    return command


def relay(hub: Hub, from_user: str, to_user: str, name: str,
          payload: dict[str, Any]) -> Callable[[Room], dict[str, Any]]:
    """Pass a signalling message to one participant's connections, `fromUserId` set here."""

    def command(room: Room) -> dict[str, Any]:
        live = _live(room)
        if from_user not in live.participants:
            raise AppError("not_found", "you are not in a live session")
        if to_user == from_user or to_user not in live.participants:
            raise AppError("not_found", f"{to_user} is not a participant of your session")
        targets = _sids(hub, room, to_user)
        room.broadcast(name, {**payload, "fromUserId": from_user}, only=targets)
        return {"delivered": len(targets)}

    return command
