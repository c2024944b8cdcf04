"""The registry: room id → live `Room`, and the nursery every room runs in.

The registry is the rooms' owner: `open()` starts a room in the registry's
nursery (so a room outlives the request that created it, and dies with the
daemon), and the room removes itself from the index when its loop ends. A
room's failure is logged and contained; it never cancels its siblings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from pratico_daemon import logs
from pratico_daemon.metrics import Metrics
from pratico_daemon.rooms.room import Room, RoomStatistics

log = logs.get("rooms")


class RoomRegistry:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self._rooms: dict[str, Room] = {}
        self._nursery: trio.Nursery | None = None
        self._metrics = metrics
        self._opening: dict[str, trio.Event] = {}

    def __repr__(self) -> str:
        return f"<RoomRegistry {len(self._rooms)} rooms>"

    def __len__(self) -> int:
        return len(self._rooms)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Own the rooms' nursery until cancelled (the daemon's lifetime)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self)
            await trio.sleep_forever()

    def get(self, room_id: str) -> Room | None:
        return self._rooms.get(room_id)

    def rooms(self, kind: str | None = None) -> list[Room]:
        return [r for r in self._rooms.values() if kind is None or r.kind == kind]

    async def open(self, room_id: str, factory: Callable[[], Room]) -> Room:
        """The live room `room_id`, started from `factory()` if it is not running.

        Two concurrent opens of the same id get the same room.
        """
        while True:
            room = self._rooms.get(room_id)
            if room is not None:
                return room
            pending = self._opening.get(room_id)
            if pending is None:
                break
            await pending.wait()
        assert self._nursery is not None, "RoomRegistry.run is not running"
        self._opening[room_id] = opened = trio.Event()
        try:
            room = factory()
            room.on_end.append(self._forget)
            await self._nursery.start(self._supervise, room)
            self._rooms[room_id] = room
            if self._metrics is not None:
                self._metrics.rooms.labels(room.kind).inc()
            return room
        finally:
            del self._opening[room_id]
            opened.set()

    async def _supervise(self, room: Room, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await room.run(task_status=task_status)
        except Exception:
            log.exception("room crashed", extra={"room": room.room_id})

    def _forget(self, room: Room) -> None:
        if self._rooms.get(room.room_id) is room:
            del self._rooms[room.room_id]
            if self._metrics is not None:
                self._metrics.rooms.labels(room.kind).dec()

    def statistics(self) -> list[RoomStatistics]:
        return [room.statistics() for room in self._rooms.values()]
