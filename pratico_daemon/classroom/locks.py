"""A lock per key (a teacher, a lesson) that disappears when nobody holds or waits for it.

Presence and seat-hash updates are read-modify-write sequences on Redis; two
connections of the same teacher connecting and disconnecting at once must not
interleave them (the last writer would leave `connect` with a grace TTL, or
`disconnect` without one). Serialising per key on this node is enough: a
teacher's connections, and a lesson's room, live on one node.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


class KeyedLock:
    def __init__(self) -> None:
        self._locks: dict[str, tuple[trio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = trio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock_, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock_, users - 1)
