"""What the rest of the daemon knows about storage: these protocols and nothing else.

Each protocol has a production implementation (PostgreSQL or Redis, asyncio
clients driven through trio-asyncio inside the adapter) and an embedded one
(SQLite under `state_dir`, in-process TTL keys on trio's clock). One contract
test suite runs against both. Nothing above this package imports asyncio,
asyncpg or redis.

Library errors become these exceptions at the adapter boundary:
`StorageUnavailable` (the store does not answer: degrade, journal, or answer
`unavailable`), `Conflict` (a uniqueness rule said no), `InvalidData` (the
caller's data is refused: oversized, not JSON, from a newer schema).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs


class StorageError(Exception):
    """Base of the storage errors that cross the adapter boundary."""


class StorageUnavailable(StorageError):
    """The backing store does not answer (connection refused, timed out, failed over)."""


class Conflict(StorageError):
    """A uniqueness or state rule refused the write (name taken, already ended)."""


class InvalidData(StorageError):
    """The data is refused as given (too large, not JSON-serialisable, newer schema)."""


_ID_RANDOM = random.Random()  # seeded from os.urandom: unique per process, no syscall per id
_UUID_VERSION_7 = (0x7 << 76) | (0b10 << 62)
_RAND_A_SHIFT = 62  # the top 12 of 74 random bits go above the variant bits
_RAND_BITS = 74
_new_uuid = object.__new__
_set_slot = object.__setattr__
_last = [0, 0]  # [milliseconds, 74 random bits] of the last id this process made


def _after_fork_in_child() -> None:
    """A forked child must not repeat our ids: new random bits, no last id to follow."""
    _ID_RANDOM.seed()
    _last[:] = [0, 0]


os.register_at_fork(after_in_child=_after_fork_in_child)


def new_event_id() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): time-ordered, so ids sort like the events they name.

    Strictly increasing within the process (RFC 9562 §6.2, method 2): an id
    made in the same millisecond as the previous one (or after the clock
    stepped back) is the previous one plus one. Events of one room made within
    a millisecond — an answer and the close that follows it — therefore sort,
    replay and report in the order they happened; random bits alone put them
    in either order.

    Called for every room event, so built without `UUID.__init__`'s checks
    (the value is valid by construction) and from a process-local generator
    rather than `os.urandom`: 74 random bits per millisecond keep the ids of
    several daemons apart, and nothing relies on them being unguessable.
    (1.3 µs against ~3 µs here; it was a tenth of an append's cost in
    bench/storage_bench.py.) The daemon makes ids on its one trio thread.
    """
    ms = time.time_ns() // 1_000_000
    last_ms, last_rand = _last
    if ms > last_ms:
        rand = _ID_RANDOM.getrandbits(_RAND_BITS)
    else:
        ms, rand = last_ms, last_rand + 1
        if rand >> _RAND_BITS:  # 2**74 ids in one millisecond: borrow the next one
            ms, rand = ms + 1, _ID_RANDOM.getrandbits(_RAND_BITS - 1)
    _last[0], _last[1] = ms, rand
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | _UUID_VERSION_7
    value |= (rand >> _RAND_A_SHIFT) << 64 | (rand & ((1 << 62) - 1))
    event_id = _new_uuid(uuid.UUID)
    _set_slot(event_id, "int", value)
    _set_slot(event_id, "is_safe", uuid.SafeUUID.unknown)
    return event_id


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@attrs.frozen
class RoomEvent:
    """One row of `room_events` (seed 000): what happened in a room, by whom."""

    room_id: str
    type: str
    data: Mapping[str, Any] = attrs.field(factory=dict)
    user_id: str | None = None
    id: uuid.UUID = attrs.field(factory=new_event_id)
    created_at: dt.datetime = attrs.field(factory=utcnow)


class EventStore(Protocol):
    async def append_durable(self, event: RoomEvent) -> None:
        """Return once `event` is committed (Postgres, or the local outage journal).

        Many concurrent callers share one group commit. Raises `StorageUnavailable`
        only when neither Postgres nor the journal can take it, `InvalidData` when
        the event is refused (data too large or not JSON).
        """
        ...

    async def read(
        self, room_id: str, *, after: uuid.UUID | None = None, limit: int = 100
    ) -> list[RoomEvent]:
        """A room's events in time order, strictly after `after`."""
        ...

    async def flush(self) -> None:
        """Wait until everything appended so far is durable (drain on shutdown)."""
        ...


@attrs.frozen
class Checkpoint:
    """A versioned snapshot of one room's state (cattrs-unstructured, JSON-able)."""

    room_id: str
    kind: str  # "lesson" | "pratico" | "conversation" | ...
    version: int
    state: Mapping[str, Any]
    schema: int = 1


class CheckpointStore(Protocol):
    async def put_many(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Write snapshots in one batch; an older version never overwrites a newer one."""
        ...

    async def get(self, room_id: str) -> Checkpoint | None: ...

    async def delete(self, room_id: str) -> None: ...

    async def list(self, kind: str | None = None) -> list[Checkpoint]:
        """Every stored snapshot (of one kind), for restore at start."""
        ...


RESYNC = "\0resync"
"""Sent on the expirations channel when notifications may have been lost
(overflow, resubscription): the consumer rescans the keys it cares about."""


@attrs.frozen
class HashWrite:
    """One `hset` of a `PresenceStore.hset_many`: fields, and a TTL to reset if given.

    `defaults` are set only where the field is missing, before `mapping`: a
    hash created with every field by whichever writer comes first.
    """

    key: str
    mapping: Mapping[str, str]
    ttl_s: float | None = None
    defaults: Mapping[str, str] = attrs.field(factory=dict)


class PresenceStore(Protocol):
    """Keys with TTLs and hashes, named exactly as the seed documents (prefix added inside)."""

    async def hset(
        self, key: str, mapping: Mapping[str, str], ttl_s: float | None = None
    ) -> None: ...

    async def hset_many(self, writes: Sequence[HashWrite]) -> list[bool]:
        """Apply the writes together; for each, whether its key existed just before it.

        One request (on Redis one transaction) instead of one per write: a
        `join_lesson` writes three hashes and asks whether the user's session
        key was there (a reconnect). Input that fails validation (a bad key,
        mapping or TTL) is refused before anything is written; a key holding a
        string is `InvalidData` (Redis, like any MULTI, keeps the other writes).
        """
        ...

    async def hgetall(self, key: str) -> dict[str, str]: ...

    async def hdel(self, key: str, *fields: str) -> None: ...

    async def set(
        self, key: str, value: str, ttl_s: float | None = None, *, nx: bool = False
    ) -> bool: ...

    async def get(self, key: str) -> str | None: ...

    async def expire(self, key: str, ttl_s: float) -> None: ...

    async def persist(self, key: str) -> None: ...

    async def ttl(self, key: str) -> float | None:
        """Seconds left, None when the key has no TTL or does not exist."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, *keys: str) -> None: ...

    async def scan(self, pattern: str) -> list[str]:
        """Keys (prefix stripped) matching a glob pattern, for resync after RESYNC."""
        ...
