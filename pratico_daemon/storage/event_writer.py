"""Group commit: many concurrent `append_durable` calls share one write.

Theory of operation. A caller validates and encodes its event (refused at once
with `InvalidData`, before queueing), puts a `Pending` on a bounded trio
channel, and waits on that Pending's own completion. ONE writer task takes
whatever is queued — the first item blocking, then everything else already
there, up to `max_batch` — hands the whole batch to `commit` (one round trip
for Postgres, one transaction for SQLite), then completes every Pending of the
batch at once. While a commit is in flight new appends pile up in the channel
and become the next batch, so the batch size grows with the load by itself
and an idle store commits single events without waiting for company. A
`commit` that keeps batches in order itself (Postgres) may take the next
batch while the previous one commits (`max_in_flight`).

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
# A queue this deep with nothing in flight is split into two batches (see `run`).
_SPLIT_AT = 64


class Pending:
    """One appended event waiting for its batch to commit.

    The appending task parks itself with `wait_task_rescheduled` and the writer
    reschedules it: no `trio.Event` (and its ParkingLot) per event, which was a
    quarter of the cost of an append at tens of thousands of events/s.
    """

    __slots__ = ("abandoned", "data_json", "error", "event", "queued_at", "task")

    def __init__(self, event: RoomEvent, data_json: str, queued_at: float,
                 task: trio.lowlevel.Task) -> None:
        self.event = event
        self.data_json = data_json  # the event's data, encoded once, validated
        self.queued_at = queued_at
        self.task: trio.lowlevel.Task | None = task  # parked until its batch completes
        self.error: BaseException | None = None
        self.abandoned = False

    def __repr__(self) -> str:
        state = "abandoned" if self.abandoned else "waiting" if self.task else "done"
        return f"<Pending {self.event.type} {self.event.id} {state}>"

    def abort(self, _: Any) -> trio.lowlevel.Abort:
        """Cancelled while queued or in flight: no ack (see the module doc)."""
        self.abandoned = True
        return trio.lowlevel.Abort.SUCCEEDED

    def wake(self) -> None:
        """Resume the appender (once; never one that was cancelled meanwhile).

        The appender is always asleep by then, even one that queued through a
        full channel: trio's `receive` yields before it returns the event.
        """
        task, self.task = self.task, None
        if task is not None and not self.abandoned:
            trio.lowlevel.reschedule(task)


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
    data: Any = event.data
    if type(data) is not dict:
        try:
            data = dict(data)
        except (TypeError, ValueError):
            raise InvalidData("event data must be a JSON object") from None
    try:
        raw = orjson.dumps(data)
    except TypeError as exc:
        raise InvalidData(f"event data is not JSON-serialisable: {exc}") from None
    if len(raw) > max_bytes:
        raise InvalidData(f"event data is {len(raw)} bytes, over the {max_bytes}-byte limit")
    if b"\\u0000" in raw:
        raise InvalidData("event data contains a NUL character (U+0000)")
    _check_text("room_id", event.room_id)
    _check_text("type", event.type)
    if event.user_id is not None:
        _check_text("user_id", event.user_id, empty_ok=True)
    if event.created_at.tzinfo is None:
        raise InvalidData("event created_at must be timezone-aware")
    return raw.decode()


def _check_text(name: str, value: Any, *, empty_ok: bool = False) -> None:
    if not isinstance(value, str) or not (value or empty_ok):
        raise InvalidData(f"event {name} must be a non-empty string")
    if len(value) > _MAX_TEXT or "\0" in value:
        raise InvalidData(f"event {name} is too long or contains NUL")


class GroupCommitWriter:
    """The queue and the writer task shared by the Postgres and embedded event stores."""

    def __init__(self, commit: CommitBatch, *, metrics: Any = None,
                 max_batch: int = DEFAULT_MAX_BATCH, queue_size: int = DEFAULT_QUEUE_SIZE,
                 max_data_bytes: int = DEFAULT_MAX_DATA_BYTES, max_in_flight: int = 1) -> None:
        self._commit = commit
        self._metrics = metrics
        self.max_batch = max_batch
        # Batches handed to `commit` at once. More than one only for a `commit`
        # that keeps them in order itself (PgEventStore chains its commits).
        self.max_in_flight = max_in_flight
        self._batches_in_flight = 0
        self._batch_done = trio.Event()  # set (and replaced) each time a batch completes
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
        pending = Pending(event, data_json, time.perf_counter(), trio.lowlevel.current_task())
        self._in_flight += 1
        if self._idle.is_set():
            self._idle = trio.Event()
        try:
            # No yield when there is room: the park below is the checkpoint,
            # and one scheduling round per event is most of the writer's cost.
            self._send.send_nowait(pending)
        except trio.WouldBlock:
            try:
                await self._send.send(pending)
            except BaseException:
                pending.abandoned = True
                self._finished(1)
                raise
        await trio.lowlevel.wait_task_rescheduled(pending.abort)
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
        """The writer task: drain, commit, wake; forever (until cancelled).

        With `max_in_flight` > 1, under load (at least `_SPLIT_AT` events
        waiting) the next batch starts while earlier ones commit: the database
        works on one while this process wakes the appenders of another and
        takes their next events. When nothing is in flight and that many
        events wait (every appender parked, as after a burst), the first batch
        takes half of them so that a second one can start at once. Below that
        load batches go one at a time, which is the cheapest for latency.
        """
        task_status.started()
        receive = self._receive
        async with trio.open_nursery() as batches:
            while True:
                first = await receive.receive()
                # A second batch only pays under load: a small one waits for the
                # batch in flight and then commits the cheap way (see PgEventStore).
                while self._batches_in_flight and (
                        self._batches_in_flight >= self.max_in_flight
                        or receive.statistics().current_buffer_used + 1 < _SPLIT_AT):
                    await self._batch_done.wait()
                batch = [first]
                limit = self.max_batch
                waiting = receive.statistics().current_buffer_used
                if self.max_in_flight > 1 and not self._batches_in_flight \
                        and waiting + 1 >= _SPLIT_AT:
                    limit = min(limit, (waiting + 2) // 2)
                while len(batch) < limit:
                    try:
                        batch.append(receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                self._batches_in_flight += 1
                batches.start_soon(self._commit_in_flight, batch)

    async def _commit_in_flight(self, batch: list[Pending]) -> None:
        try:
            await self._commit_and_wake(batch)
        finally:
            self._batches_in_flight -= 1
            done, self._batch_done = self._batch_done, trio.Event()
            done.set()

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
            p.wake()
        if self._metrics is not None:
            self._metrics.event_write_seconds.observe_many(
                now - p.queued_at for p in batch if not p.abandoned and p.error is None)
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

