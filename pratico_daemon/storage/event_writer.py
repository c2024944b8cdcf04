"""Group commit: many concurrent `append_durable` calls share one write.

Theory of operation. A caller validates and encodes its event (refused at once
with `InvalidData`, before queueing), puts a `Pending` on a bounded trio
channel, and waits on that Pending's own completion. ONE writer task takes
whatever is queued — the first item blocking, then everything else already
there, up to `max_batch` — hands the whole batch to `commit` (one round trip
for Postgres, one transaction for SQLite), then completes every Pending of the
batch at once. While a commit is in flight new appends pile up in the channel
and become the next batch, so the batch size grows with the load by itself
and an idle store commits single events without waiting for company.

Cancellation. A caller cancelled while its event is still queued marks its
Pending abandoned: the writer drops it from the batch, and no ack is ever
returned for it. A caller cancelled after its batch went to the database gets
no ack either, although the event may be committed — exactly as if the
connection had dropped after the commit. The writer itself is never cancelled
mid-batch except when the whole store closes, and `commit` implementations
are all-or-nothing, so a batch is either written or not.

The channel bound is the memory bound: `queue_size` events (each at most
`max_data_bytes` of JSON) wait at most; beyond that, appenders wait for room.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import orjson
import trio

from pratico_daemon import logs
from pratico_daemon.config import MIB
from pratico_daemon.storage.protocols import (
    InvalidData,
    RoomEvent,
    StorageError,
    StorageUnavailable,
)

log = logs.get("storage.events")

# A room event is a fact about a click (an answer, a join), not a document;
# 1 MiB leaves room for a quiz with its questions and stops a runaway payload.
DEFAULT_MAX_DATA_BYTES = 1 * MIB
# One COPY of 5,000 rows takes ~20-40 ms on the reference machine: batches larger
# than that only add latency to the first events of the batch.
DEFAULT_MAX_BATCH = 5000
# A few batches' worth: enough to keep the writer busy, small enough that a
# stalled database pushes back on appenders within a fraction of a second.
DEFAULT_QUEUE_SIZE = 20000
_MAX_TEXT = 1000  # room_id, type, user_id: identifiers, not content.


@attrs.define(eq=False, slots=True)
class Pending:
    """One appended event waiting for its batch to commit."""

    event: RoomEvent
    data_json: str  # the event's data, encoded once, validated
    queued_at: float
    done: trio.Event = attrs.Factory(trio.Event)
    error: BaseException | None = None
    abandoned: bool = False


CommitBatch = Callable[[Sequence[Pending]], Awaitable[None]]
EventRow = tuple[uuid.UUID, dt.datetime, str, str | None, str, str]
"""(id, created_at, room_id, user_id, type, data JSON): what every backend stores."""


def row_of(p: Pending) -> EventRow:
    e = p.event
    return (e.id, e.created_at, e.room_id, e.user_id, e.type, p.data_json)


def event_of(row: EventRow) -> RoomEvent:
    event_id, created_at, room_id, user_id, type_, data = row
    return RoomEvent(room_id=room_id, type=type_, data=orjson.loads(data), user_id=user_id,
                     id=event_id, created_at=created_at)


def encode_data(event: RoomEvent, max_bytes: int = DEFAULT_MAX_DATA_BYTES) -> str:
    """The event's data as JSON text, or `InvalidData` saying what is wrong.

    Refused here, before anything is queued: data that is not a JSON object,
    not serialisable, larger than `max_bytes`, or containing NUL (PostgreSQL's
    jsonb and text cannot store U+0000, and a batch must never fail on it).
    """
    if not isinstance(event.data, dict):
        try:
            data: Any = dict(event.data)
        except (TypeError, ValueError):
            raise InvalidData("event data must be a JSON object") from None
    else:
        data = event.data
    try:
        raw = orjson.dumps(data)
    except TypeError as exc:
        raise InvalidData(f"event data is not JSON-serialisable: {exc}") from None
    if len(raw) > max_bytes:
        raise InvalidData(f"event data is {len(raw)} bytes, over the {max_bytes}-byte limit")
    if b"\\u0000" in raw:
        raise InvalidData("event data contains a NUL character (U+0000)")
    for name in ("room_id", "type", "user_id"):
        value = getattr(event, name)
        if value is None and name == "user_id":
            continue
        if not isinstance(value, str) or (not value and name != "user_id"):
            raise InvalidData(f"event {name} must be a non-empty string")
        if len(value) > _MAX_TEXT or "\0" in value:
            raise InvalidData(f"event {name} is too long or contains NUL")
    if event.created_at.tzinfo is None:
        raise InvalidData("event created_at must be timezone-aware")
    return raw.decode()


class GroupCommitWriter:
    """The queue and the writer task shared by the Postgres and embedded event stores."""

    def __init__(self, commit: CommitBatch, *, metrics: Any = None,
                 max_batch: int = DEFAULT_MAX_BATCH, queue_size: int = DEFAULT_QUEUE_SIZE,
                 max_data_bytes: int = DEFAULT_MAX_DATA_BYTES) -> None:
        self._commit = commit
        self._metrics = metrics
        self.max_batch = max_batch
        self.max_data_bytes = max_data_bytes
        self._send, self._receive = trio.open_memory_channel[Pending](queue_size)
        self._in_flight = 0  # appended, not yet completed
        self._idle = trio.Event()
        self._idle.set()
        self.batches = 0
        self.committed = 0

    def __repr__(self) -> str:
        return (f"<GroupCommitWriter {self._in_flight} in flight, {self.batches} batches, "
                f"{self.committed} committed>")

    async def append_durable(self, event: RoomEvent) -> None:
        data_json = encode_data(event, self.max_data_bytes)
        pending = Pending(event, data_json, time.perf_counter())
        self._in_flight += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        queued = False
        try:
            try:
                # No yield when there is room: the wait below is the checkpoint,
                # and one scheduling round per event is most of the writer's cost.
                self._send.send_nowait(pending)
            except trio.WouldBlock:
                await self._send.send(pending)
            queued = True
            await pending.done.wait()
        except BaseException:
            pending.abandoned = True
            if not queued:
                self._finished(1)
            raise
        if pending.error is not None:
            raise pending.error

    async def flush(self) -> None:
        """Return once everything appended before this call has completed."""
        while self._in_flight:
            await self._idle.wait()

    def _finished(self, count: int) -> None:
        self._in_flight -= count
        if self._in_flight == 0:
            self._idle.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: drain, commit, wake; forever (until cancelled)."""
        task_status.started()
        receive = self._receive
        while True:
            first = await receive.receive()
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(receive.receive_nowait())
                except trio.WouldBlock:
                    break
            await self._commit_and_wake(batch)

    async def _commit_and_wake(self, batch: list[Pending]) -> None:
        live = [p for p in batch if not p.abandoned]
        error: BaseException | None = None
        if live:
            try:
                await self._commit(live)
            except StorageUnavailable as exc:
                error = exc  # neither the database nor the journal took it
            except StorageError as exc:
                # Not an outage (the committer journals those itself): one event
                # refused by the database. Isolate it so the others still land.
                error = exc
                if len(live) > 1:
                    await self._commit_one_by_one(live)
                    error = None
            except Exception as exc:
                # A bug below us must not kill the writer (and with it every
                # room's durable path): the batch fails loudly, the next one runs.
                log.exception("event batch of %d failed", len(live))
                error = StorageError(f"event write failed: {type(exc).__name__}")
        now = time.perf_counter()
        for p in batch:
            if error is not None and p.error is None:
                p.error = error
            if self._metrics is not None and not p.abandoned and p.error is None:
                self._metrics.event_write_seconds.observe(now - p.queued_at)
            p.done.set()
        if self._metrics is not None and live:
            self._metrics.event_batch_size.observe(len(live))
        self.batches += 1
        self.committed += sum(1 for p in live if p.error is None)
        self._finished(len(batch))

    async def _commit_one_by_one(self, batch: list[Pending]) -> None:
        for p in batch:
            try:
                await self._commit([p])
            except StorageError as exc:
                log.warning("event %s of room %s refused: %s", p.event.id, p.event.room_id, exc)
                p.error = exc

