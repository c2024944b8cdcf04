"""A room is an actor: one task, one inbox, the only writer of the room's state.

Theory of operation
-------------------
Everything that changes a room — a client event, a REST call, a timer firing —
is a *command*: a function of the room, sent through the bounded inbox with
`await room.call(fn)` and run by the room's own loop, one at a time. Because
only that loop touches `room.state` and `room.members`, nothing needs a lock
and nothing can observe a half-applied change. A command that raises
`AppError` answers its caller with that error and leaves the room running; any
other exception is logged, answered as `internal`, and the room keeps running
too (one bad event never takes down a room).

Commands are plain functions (or coroutines that return quickly): a command
that awaits slow I/O stalls the whole room. Durable writes are therefore done
by the caller *after* the command returns (e.g. a quiz answer is recorded in
state, then the session awaits `append_durable` before acknowledging).

Sub-tasks (quiz deadlines, empty-room timers, signalling helpers) live in the
room's own nursery (`room.nursery`) and die with it; they too change state
only through `room.call`.

Fan-out is synchronous and never blocks: `room.broadcast(...)` builds one
`Broadcast` (encoded at most once per framing) and hands it to every member's
`deliver`, which queues it on that connection's bounded outbox or disconnects
a slow consumer.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar

import attrs
import outcome
import trio

from pratico_daemon import logs
from pratico_daemon.errors import AppError
from pratico_daemon.rooms.broadcast import Broadcast, Framing

log = logs.get("rooms")
T = TypeVar("T")

# A room serves at most a few hundred members; 256 queued commands is several
# seconds of a full classroom answering at once, and bounds memory per room.
DEFAULT_INBOX_SIZE = 256


class Member(Protocol):
    """A connection's seat in a room. `deliver` must never block."""

    @property
    def member_id(self) -> str: ...

    @property
    def framing(self) -> Framing: ...

    def deliver(self, broadcast: Broadcast) -> None: ...


class RoomState(enum.Enum):
    STARTING = "STARTING"
    ACTIVE = "ACTIVE"
    ENDING = "ENDING"
    ENDED = "ENDED"


@attrs.frozen
class RoomStatistics:
    room_id: str
    kind: str
    state: str
    members: int
    inbox_queued: int
    commands: int
    broadcasts: int


class _Command:
    __slots__ = ("done", "fn", "result")

    def __init__(self, fn: Callable[[Room], Any]) -> None:
        self.fn = fn
        self.done = trio.Event()
        self.result: outcome.Outcome | None = None


class Room:
    """One live room. Create through `RoomRegistry.open`; see the module docstring."""

    def __init__(
        self,
        room_id: str,
        kind: str,
        namespace: str,
        *,
        state: Any = None,
        inbox_size: int = DEFAULT_INBOX_SIZE,
        max_members: int = 1000,
    ) -> None:
        self.room_id = room_id
        self.kind = kind
        self.namespace = namespace
        self.state = state
        self.max_members = max_members
        self.members: dict[str, Member] = {}
        self.lifecycle = RoomState.STARTING
        self.nursery: trio.Nursery | None = None
        self.on_end: list[Callable[[Room], None]] = []
        self._send, self._receive = trio.open_memory_channel[_Command](inbox_size)
        self._commands = 0
        self._broadcasts = 0
        self._ended = trio.Event()

    def __repr__(self) -> str:
        state = self.lifecycle.value
        return f"<Room {self.room_id} {self.kind} {state} {len(self.members)} members>"

    # -- outside the room: commands ---------------------------------------------------------

    async def call(self, fn: Callable[[Room], Awaitable[T] | T]) -> T:
        """Run `fn(room)` in the room's loop and return its result (or raise its AppError).

        If the caller is cancelled after the command was queued, the command still
        runs (it was accepted); only the caller stops waiting.
        """
        if self.lifecycle in (RoomState.ENDING, RoomState.ENDED):
            raise AppError("not_found", "room has ended")
        command = _Command(fn)
        try:
            await self._send.send(command)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise AppError("not_found", "room has ended") from None
        await command.done.wait()
        assert command.result is not None
        return command.result.unwrap()  # type: ignore[no-any-return]

    def call_nowait(self, fn: Callable[[Room], Any]) -> bool:
        """Queue a command without waiting for it; False when the inbox is full or closed."""
        try:
            self._send.send_nowait(_Command(fn))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    async def wait_ended(self) -> None:
        await self._ended.wait()

    # -- inside the room (called from commands) ------------------------------------------------

    def join(self, member: Member) -> None:
        if member.member_id not in self.members and len(self.members) >= self.max_members:
            raise AppError("room_full", f"room holds at most {self.max_members} members")
        self.members[member.member_id] = member

    def leave(self, member_id: str) -> Member | None:
        return self.members.pop(member_id, None)

    def broadcast(
        self,
        name: str,
        payload: Mapping[str, Any],
        *,
        exclude: Iterable[str] = (),
        only: Iterable[str] | None = None,
    ) -> Broadcast:
        """Deliver `name(payload)` to every member (or `only` those), encoded once per framing."""
        self._broadcasts += 1
        message = Broadcast(self.namespace, name, payload)
        members = self.members
        if only is None:
            targets: Iterable[Member] = list(members.values())
        else:
            targets = [members[m] for m in only if m in members]
        skip = set(exclude)
        if skip:
            targets = [m for m in targets if m.member_id not in skip]
        for member in targets:  # the hot loop: one call per member, nothing else
            member.deliver(message)
        return message

    def end(self) -> None:
        """Stop after the current command; queued commands answer `not_found`."""
        if self.lifecycle is RoomState.ACTIVE:
            self.lifecycle = RoomState.ENDING
            self._send.close()

    def statistics(self) -> RoomStatistics:
        return RoomStatistics(
            room_id=self.room_id,
            kind=self.kind,
            state=self.lifecycle.value,
            members=len(self.members),
            inbox_queued=self._receive.statistics().current_buffer_used,
            commands=self._commands,
            broadcasts=self._broadcasts,
        )

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The room's task. Returns when the room ends; never raises for a bad command."""
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                self.lifecycle = RoomState.ACTIVE
                task_status.started(self)
                async with self._receive:
                    async for command in self._receive:
                        if self.lifecycle is RoomState.ACTIVE:
                            await self._execute(command)
                        else:
                            self._refuse(command)
                nursery.cancel_scope.cancel()
        finally:
            self.lifecycle = RoomState.ENDED
            self._fail_queued()
            for hook in self.on_end:
                try:
                    hook(self)
                except Exception:
                    log.exception("room end hook failed", extra={"room": self.room_id})
            self._ended.set()

    async def _execute(self, command: _Command) -> None:
        self._commands += 1
        try:
            value = command.fn(self)
            if inspect.isawaitable(value):
                value = await value
            command.result = outcome.Value(value)
        except AppError as exc:
            command.result = outcome.Error(exc)
        except Exception as exc:
            log.exception("command failed in room", extra={"room": self.room_id})
            error = AppError("internal", "internal error")
            error.__cause__ = exc
            command.result = outcome.Error(error)
        command.done.set()

    @staticmethod
    def _refuse(command: _Command) -> None:
        command.result = outcome.Error(AppError("not_found", "room has ended"))
        command.done.set()

    def _fail_queued(self) -> None:
        while True:
            try:
                command = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            self._refuse(command)
