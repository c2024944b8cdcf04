"""In-process TTL keys for the embedded mode: the `PresenceStore` without Redis.

Expiry is driven by trio's clock (`trio.current_time()`), so tests run grace
periods and cooldowns under `autojump_clock` in microseconds. One timer task
keeps a heap of `(deadline, generation, key)`; a key whose TTL changes gets a
new generation and its old heap entries are skipped when popped (lazy deletion
keeps every operation O(log n) with no search). Like Redis, a key read after
its deadline but before the timer ran is treated as gone and reported expired
at that moment, so readers never see a key past its TTL.

Not persisted: a restart of an embedded node forgets presence. That is the
behaviour of a single node anyway — its WebSocket connections died with it,
so every teacher reconnects and recreates their keys; only a teacher's grace
period in progress is lost (their lesson stays live until they return or an
operator ends it).
"""

from __future__ import annotations

import fnmatch
import heapq
import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from pratico_daemon.config import Config
from pratico_daemon.services import Services
from pratico_daemon.storage.background import background_tasks
from pratico_daemon.storage.expirations import ExpiryFeed
from pratico_daemon.storage.protocols import HashWrite, InvalidData
from pratico_daemon.storage.redis_store import check_key, check_mapping, check_ttl


@attrs.define
class _Entry:
    value: str | dict[str, str]
    deadline: float | None = None
    generation: int = 0


class EmbeddedPresence:
    """`PresenceStore` on a dict; a timer task (`run`) expires keys on trio's clock."""

    def __init__(self, feed: ExpiryFeed) -> None:
        self._keys: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._generations = itertools.count(1)
        self._feed = feed
        self._changed = trio.Event()

    def __repr__(self) -> str:
        return f"<EmbeddedPresence {len(self._keys)} keys, {len(self._heap)} deadlines>"

    # ---- the timer ------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Expire keys as their deadlines pass; wakes early when a nearer one is set."""
        task_status.started()
        while True:
            self._changed = trio.Event()
            self._expire_due()
            deadline = self._heap[0][0] if self._heap else float("inf")
            with trio.move_on_at(deadline):
                await self._changed.wait()

    def _expire_due(self) -> None:
        now = trio.current_time()
        while self._heap and self._heap[0][0] <= now:
            _, generation, key = heapq.heappop(self._heap)
            entry = self._keys.get(key)
            if entry is not None and entry.generation == generation:
                del self._keys[key]
                self._feed.push(key)

    def _set_deadline(self, key: str, entry: _Entry, ttl_s: float | None) -> None:
        entry.generation = next(self._generations)
        if ttl_s is None:
            entry.deadline = None
            return
        entry.deadline = trio.current_time() + check_ttl(ttl_s) / 1000
        heapq.heappush(self._heap, (entry.deadline, entry.generation, key))
        if self._heap[0][1] == entry.generation:
            self._changed.set()  # the nearest deadline moved: wake the timer

    def _live(self, key: str) -> _Entry | None:
        """The entry if it exists and has not passed its deadline (expiring it if so)."""
        entry = self._keys.get(check_key(key))
        if entry is not None and entry.deadline is not None \
                and entry.deadline <= trio.current_time():
            del self._keys[key]
            self._feed.push(key)
            return None
        return entry

    def _hash(self, key: str) -> _Entry | None:
        entry = self._live(key)
        if entry is not None and not isinstance(entry.value, dict):
            raise InvalidData(f"key {key!r:.60} holds a string, not a hash")
        return entry

    # ---- PresenceStore -----------------------------------------------------------

    async def hset(self, key: str, mapping: Mapping[str, str], ttl_s: float | None = None) -> None:
        """Set fields; with `ttl_s` the key expires then, without it its TTL is left as is."""
        fields = check_mapping(mapping)
        if ttl_s is not None:
            check_ttl(ttl_s)
        await trio.lowlevel.checkpoint()
        self._apply_hset(key, self._hash(key), fields, ttl_s)

    def _apply_hset(self, key: str, entry: _Entry | None, fields: dict[str, str],
                    ttl_s: float | None) -> None:
        if entry is None:
            if not fields:
                return
            entry = self._keys[key] = _Entry({})
        assert isinstance(entry.value, dict)
        entry.value.update(fields)
        if ttl_s is not None:
            self._set_deadline(key, entry, ttl_s)

    async def hset_many(self, writes: Sequence[HashWrite]) -> list[bool]:
        """Every write checked first (a bad one changes nothing), then all applied."""
        checked = []
        for write in writes:
            fields = check_mapping(write.mapping)
            defaults = check_mapping(write.defaults)
            if write.ttl_s is not None:
                check_ttl(write.ttl_s)
            checked.append((check_key(write.key), fields, defaults, write.ttl_s))
        await trio.lowlevel.checkpoint()
        for key, *_ in checked:
            self._hash(key)  # InvalidData for a string key, before anything changes
        existed = []
        for key, fields, defaults, ttl_s in checked:
            entry = self._hash(key)
            existed.append(entry is not None)
            if defaults:
                have = entry.value if entry is not None else {}
                fields = {**{f: v for f, v in defaults.items() if f not in have}, **fields}
            self._apply_hset(key, entry, fields, ttl_s)
        return existed

    async def hgetall(self, key: str) -> dict[str, str]:
        await trio.lowlevel.checkpoint()
        entry = self._hash(key)
        return dict(entry.value) if entry is not None else {}  # type: ignore[arg-type]

    async def hdel(self, key: str, *fields: str) -> None:
        await trio.lowlevel.checkpoint()
        entry = self._hash(key)
        if entry is None:
            return
        assert isinstance(entry.value, dict)
        for field in fields:
            entry.value.pop(field, None)
        if not entry.value:  # Redis deletes a hash with no fields left
            del self._keys[key]

    async def set(
        self, key: str, value: str, ttl_s: float | None = None, *, nx: bool = False
    ) -> bool:
        """SET; returns False only when `nx` and the key existed. No TTL: persistent."""
        if not isinstance(value, str):
            raise InvalidData("value must be a string")
        if ttl_s is not None:
            check_ttl(ttl_s)
        await trio.lowlevel.checkpoint()
        if nx and self._live(key) is not None:
            return False
        entry = self._keys[check_key(key)] = _Entry(value)
        self._set_deadline(key, entry, ttl_s)
        return True

    async def get(self, key: str) -> str | None:
        await trio.lowlevel.checkpoint()
        entry = self._live(key)
        if entry is None:
            return None
        if not isinstance(entry.value, str):
            raise InvalidData(f"key {key!r:.60} holds a hash, not a string")
        return entry.value

    async def expire(self, key: str, ttl_s: float) -> None:
        check_ttl(ttl_s)
        await trio.lowlevel.checkpoint()
        entry = self._live(key)
        if entry is not None:
            self._set_deadline(key, entry, ttl_s)

    async def persist(self, key: str) -> None:
        await trio.lowlevel.checkpoint()
        entry = self._live(key)
        if entry is not None:
            self._set_deadline(key, entry, None)

    async def ttl(self, key: str) -> float | None:
        """Seconds left, None when the key has no TTL or does not exist."""
        await trio.lowlevel.checkpoint()
        entry = self._live(key)
        if entry is None or entry.deadline is None:
            return None
        return max(0.0, entry.deadline - trio.current_time())

    async def exists(self, key: str) -> bool:
        await trio.lowlevel.checkpoint()
        return self._live(key) is not None

    async def delete(self, *keys: str) -> None:
        for key in keys:
            check_key(key)
        await trio.lowlevel.checkpoint()
        for key in keys:
            self._keys.pop(key, None)

    async def scan(self, pattern: str) -> list[str]:
        """Keys matching a glob pattern (Redis' `[^…]` spelled as fnmatch's `[!…]`)."""
        if not isinstance(pattern, str) or not pattern:
            raise InvalidData("scan pattern must be a non-empty string")
        await trio.lowlevel.checkpoint()
        translated = pattern.replace("[^", "[!")
        return sorted(k for k in list(self._keys) if fnmatch.fnmatchcase(k, translated)
                      and self._live(k) is not None)


@attrs.define
class EmbeddedKeys:
    """What `open_embedded_keys` yields: the same shape as `RedisStores`' presence part."""

    presence: EmbeddedPresence
    expirations: trio.MemoryReceiveChannel[str]
    feed: ExpiryFeed


@asynccontextmanager
async def open_embedded_keys(
    config: Config, services: Services, *, expirations_size: int = 1000
) -> AsyncIterator[EmbeddedKeys]:
    """In-process presence keys and their expiry timer, for the embedded mode."""
    feed = ExpiryFeed(expirations_size)
    presence = EmbeddedPresence(feed)
    async with background_tasks() as nursery:
        await nursery.start(feed.run)
        await nursery.start(presence.run)
        services.health.set("presence", True, "embedded (in-process keys)")
        yield EmbeddedKeys(presence=presence, expirations=feed.receive, feed=feed)
