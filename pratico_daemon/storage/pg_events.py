"""`EventStore` on PostgreSQL: group commit, and the outage journal when it is away.

Modes. *Direct*: the writer inserts each batch into `room_events` in one round
trip (by default a binary COPY, the fastest in bench/storage_bench.py; a batch
with an id already stored falls back to INSERT … ON CONFLICT DO NOTHING, so
appends stay idempotent by id). Two batches may be in flight: the second
inserts while the first commits and commits after it (`_write_in_order`),
so batches become visible in order and a batch never commits after the one
before it failed; any failure sends the batch down the serial path below.
*Journaling*: the last insert failed because Postgres did not answer (not
because it refused the data), so batches go to the local journal and are
acknowledged from there; a recovery task retries Postgres with exponential
backoff and, once it answers, replays the journal oldest-first in chunks
(ON CONFLICT (id) DO NOTHING: a replayed chunk can land twice and count once),
dropping each chunk from the journal after its commit. When the journal is
empty the recovery task switches back to *direct* while holding the same lock
the writer holds to choose where a batch goes — so no event overtakes one
still in the journal, and none is written to both places by mistake.

Readiness line `postgres` and `pratico_store_up{store="postgres"}` follow the
mode; `pratico_journal_events` is the journal depth.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import asyncpg
import attrs
import trio

from pratico_daemon import logs
from pratico_daemon.storage import migrate
from pratico_daemon.storage.event_writer import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_DATA_BYTES,
    DEFAULT_QUEUE_SIZE,
    EventRow,
    GroupCommitWriter,
    Pending,
    event_of,
    row_of,
)
from pratico_daemon.storage.journal import Journal
from pratico_daemon.storage.postgres import Postgres
from pratico_daemon.storage.protocols import RoomEvent, StorageUnavailable

log = logs.get("storage.events")
InsertMethod = Literal["unnest", "copy", "executemany", "copy_direct"]
# Batches in flight at once under load: one committing while the next inserts.
# Two use most of the quarter of the time this process waited for each commit
# (+25-40 % events/s, measured alternately with one in bench/storage_bench.py's
# setting); more was not tried.
PIPELINE = 2

_INSERT_UNNEST = """
INSERT INTO room_events (id, created_at, room_id, user_id, type, data)
SELECT i, c, r, u, t, d::jsonb
FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[])
     AS b(i, c, r, u, t, d)
ON CONFLICT (id) DO NOTHING
"""
_INSERT_ONE = """
INSERT INTO room_events (id, created_at, room_id, user_id, type, data)
VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT (id) DO NOTHING
"""
_COLUMNS = ("id", "created_at", "room_id", "user_id", "type", "data")


async def _insert_unnest(conn: asyncpg.Connection, rows: Sequence[EventRow]) -> None:
    # One statement, one round trip, autocommitted: the cheapest group commit.
    await conn.execute(_INSERT_UNNEST, *map(list, zip(*rows, strict=True)))


async def _insert_copy(conn: asyncpg.Connection, rows: Sequence[EventRow]) -> None:
    async with conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS room_events_in"
            " (LIKE room_events) ON COMMIT DELETE ROWS")
        await conn.copy_records_to_table("room_events_in", records=rows, columns=_COLUMNS)
        await conn.execute(
            "INSERT INTO room_events SELECT * FROM room_events_in ON CONFLICT (id) DO NOTHING")


async def _copy_direct(conn: asyncpg.Connection, rows: Sequence[EventRow]) -> None:
    # Binary COPY straight into the table: the cheapest write for Postgres. COPY
    # has no ON CONFLICT, so a batch holding an id already stored (an event
    # appended twice) is refused whole and written again the idempotent way.
    # Inside the batch's transaction the COPY is a savepoint, so that refusal
    # does not abort the rest.
    try:
        if conn.is_in_transaction():
            async with conn.transaction():
                await conn.copy_records_to_table("room_events", records=rows, columns=_COLUMNS)
        else:
            await conn.copy_records_to_table("room_events", records=rows, columns=_COLUMNS)
    except asyncpg.UniqueViolationError:
        await _insert_unnest(conn, rows)


class _EarlierBatchFailed(Exception):
    """The batch before this one did not reach `room_events`: this one must not either."""


async def _write_in_order(conn: asyncpg.Connection, insert: Any, rows: Sequence[EventRow],
                          before: asyncio.Future[bool] | None,
                          mine: asyncio.Future[bool]) -> None:
    """Insert, then commit only once the batch before has committed (see `_Link`).

    The insert runs while the batch before is still committing: that overlap
    is the point. The commit waits, so batches become visible in the order
    they were taken, and a batch never commits when the one before failed.
    When the batch before has already committed (any load but a burst), the
    insert is autocommitted: one round trip, no transaction to open.
    """
    if before is None or (before.done() and before.result()):
        await insert(conn, rows)
    else:
        async with conn.transaction():
            await insert(conn, rows)
            if not await asyncio.shield(before):
                raise _EarlierBatchFailed()
    if not mine.done():
        mine.set_result(True)


@attrs.define(slots=True)
class _Link:
    """One direct batch's place in the commit order.

    `committed` turns True once its rows are in `room_events`, False when they
    went to the journal or were refused; the next batch commits only after a
    True. `settled` is set once the batch went wherever it goes, so a batch
    falling back to the serial path does so after the one before it.
    """

    committed: asyncio.Future[bool]
    settled: trio.Event = attrs.field(factory=trio.Event)

    def resolve(self, committed: bool) -> None:
        if not self.committed.done():
            self.committed.set_result(committed)
        self.settled.set()


async def _insert_executemany(conn: asyncpg.Connection, rows: Sequence[EventRow]) -> None:
    async with conn.transaction():
        await conn.executemany(_INSERT_ONE, rows)


_INSERTS = {"unnest": _insert_unnest, "copy": _insert_copy,
            "executemany": _insert_executemany, "copy_direct": _copy_direct}

_READ = """
SELECT id, created_at, room_id, user_id, type, data::text FROM room_events
WHERE room_id = $1
  AND ($2::uuid IS NULL OR (created_at, id) > (
        COALESCE((SELECT created_at FROM room_events WHERE id = $2), $3), $2))
ORDER BY created_at, id
LIMIT $4
"""


async def _read(conn: asyncpg.Connection, room_id: str, after: uuid.UUID | None,
                after_time: Any, limit: int) -> list[EventRow]:
    return [tuple(r) for r in await conn.fetch(_READ, room_id, after, after_time, limit)]


def uuid7_time(value: uuid.UUID) -> Any:
    """The creation time a UUIDv7 carries (a cursor whose row is gone still pages)."""
    import datetime as dt

    return dt.datetime.fromtimestamp((value.int >> 80) / 1000, dt.UTC)


class PgEventStore:
    """Group-committed `room_events` with the outage journal (see module doc)."""

    def __init__(self, pg: Postgres, journal: Journal, *, services: Any = None,
                 method: InsertMethod = "copy_direct", max_batch: int = DEFAULT_MAX_BATCH,
                 queue_size: int = DEFAULT_QUEUE_SIZE,
                 max_data_bytes: int = DEFAULT_MAX_DATA_BYTES,
                 commit_timeout_s: float = 5.0, retry_initial_s: float = 0.05,
                 retry_max_s: float = 2.0, migrate_pending: bool = False) -> None:
        self.pg = pg
        self.journal = journal
        self._health = getattr(services, "health", None)
        self._metrics = getattr(services, "metrics", None)
        self._insert = _INSERTS[method]
        self.writer = GroupCommitWriter(self._commit, metrics=self._metrics, max_batch=max_batch,
                                        queue_size=queue_size, max_data_bytes=max_data_bytes,
                                        max_in_flight=PIPELINE)
        self._last: _Link | None = None  # the latest direct batch, for the next to follow
        self.commit_timeout_s = commit_timeout_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self._migrate_pending = migrate_pending
        self._route = trio.Lock()  # held while choosing (and writing) a batch's destination
        self.direct = journal.depth == 0 and not migrate_pending
        self._outage = trio.Event()  # set while journaling: wakes the recovery task
        self._direct_again = trio.Event()  # set while direct
        if self.direct:
            self._direct_again.set()
        else:
            self._outage.set()
        self._report()

    def __repr__(self) -> str:
        mode = "direct" if self.direct else f"journaling ({self.journal.depth} events)"
        return f"<PgEventStore {mode}>"

    # EventStore ---------------------------------------------------------------
    async def append_durable(self, event: RoomEvent) -> None:
        await self.writer.append_durable(event)

    async def read(self, room_id: str, *, after: uuid.UUID | None = None,
                   limit: int = 100) -> list[RoomEvent]:
        after_time = uuid7_time(after) if after is not None else None
        rows = await self.pg.run(_read, room_id, after, after_time, max(0, min(limit, 10_000)))
        return [event_of(r) for r in rows]

    async def flush(self) -> None:
        await self.writer.flush()

    # Tasks ----------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The writer and the recovery task; runs until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.writer.run)
            nursery.start_soon(self._recover)
            task_status.started()

    async def wait_direct(self) -> None:
        """Wait until the journal is drained and batches go straight to Postgres (tests)."""
        await self._direct_again.wait()

    # Internals ------------------------------------------------------------------
    async def _commit(self, batch: Sequence[Pending]) -> None:
        """Write one batch: chained after the one before, or the serial path.

        Up to `PIPELINE` batches are in flight (the writer's `max_in_flight`):
        each inserts at once on its own connection and commits after the one
        before (`_write_in_order`). Any failure — its own, or the batch before
        it — sends the batch down the serial path once the batch before has
        settled (`_commit_serially`). So batches land in order, and none
        overtakes one still in the journal.
        """
        rows = [row_of(p) for p in batch]
        async with self._route:
            if not self.direct:
                await self.journal.append(rows)  # StorageUnavailable if that fails too
                self._report()
                return
            before = self._last
            link = self._last = _Link(self.pg.loop.create_future())
        try:
            try:
                if before is not None and before.committed.done() \
                        and not before.committed.result():
                    raise _EarlierBatchFailed()  # no connection to take for nothing
                await self.pg.run(_write_in_order, self._insert, rows,
                                  before.committed if before is not None else None,
                                  link.committed, timeout_s=self.commit_timeout_s)
                link.resolve(True)
                return
            except StorageUnavailable as exc:
                outage: str | None = str(exc)  # Postgres did not answer this batch
            except _EarlierBatchFailed:
                outage = None  # only the batch before failed: this one may go directly
            if before is not None:
                await before.settled.wait()
            link.resolve(await self._commit_serially(rows, outage))
        finally:
            link.resolve(False)  # refused, or cancelled: whatever follows must not commit

    async def _commit_serially(self, rows: list[EventRow], outage: str | None = None) -> bool:
        """One batch at a time, under the route lock; True if it went to Postgres.

        A batch whose own write found Postgres away goes to the journal at once
        (as the last insert failing always did), not after a second timeout.
        """
        async with self._route:
            if self.direct and outage is not None:
                self._go_journaling(outage)
            if self.direct:
                try:
                    await self.pg.run(self._insert, rows, timeout_s=self.commit_timeout_s)
                    return True
                except StorageUnavailable as exc:
                    self._go_journaling(str(exc))
            await self.journal.append(rows)  # StorageUnavailable if that fails too
            self._report()
            return False

    def _go_journaling(self, reason: str) -> None:
        log.warning("postgres unreachable, journaling events locally: %s", reason)
        self.direct = False
        self._direct_again = trio.Event()
        self._outage.set()
        self._report(reason)

    def _report(self, reason: str = "") -> None:
        if self._metrics is not None:
            self._metrics.journal_depth.set(self.journal.depth)
            self._metrics.store_up.labels("postgres").set(1 if self.direct else 0)
        if self._health is not None:
            if self.direct:
                self._health.set("postgres", True)
            else:
                detail = f"journaling {self.journal.depth} events locally"
                self._health.set("postgres", False, f"{detail}: {reason}" if reason else detail)

    async def _recover(self) -> None:
        while True:
            await self._outage.wait()
            delay = self.retry_initial_s
            while True:
                try:
                    await self._replay()
                    break
                except StorageUnavailable as exc:
                    log.debug("postgres still unreachable (retry in %.2fs): %s", delay, exc)
                    self._report(str(exc))
                except Exception as exc:
                    # Postgres answers but refuses the replay (a bug, a schema
                    # drift): keep the journal, say so, keep trying — never
                    # drop acknowledged events, never kill the writer.
                    log.exception("journal replay refused by postgres")
                    self._report(f"replay refused: {type(exc).__name__}: {exc}")
                await trio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
            log.info("postgres answers again; journal replayed, writing directly")

    async def _replay(self) -> None:
        if self._migrate_pending:
            await migrate.apply(self.pg)
            self._migrate_pending = False
        chunk = self.writer.max_batch
        while True:
            last, rows = await self.journal.oldest(chunk)
            if rows:
                # ON CONFLICT DO NOTHING whatever the direct method: a chunk may land twice.
                await self.pg.run(_insert_unnest, rows, timeout_s=self.commit_timeout_s)
                await self.journal.drop_through(last)
                self._report()
                continue
            async with self._route:  # the writer cannot journal while we look
                _, rows = await self.journal.oldest(1)
                if not rows:
                    self.direct = True
                    self._outage = trio.Event()  # re-armed for the next outage
                    self._direct_again.set()
                    self._report()
                    return


@asynccontextmanager
async def open_pg_events(pg: Postgres, state_dir: Path, *, services: Any = None,
                         **options: Any) -> AsyncIterator[PgEventStore]:
    """The store with its writer and recovery tasks; flushed and stopped on exit."""
    journal = await Journal.open(state_dir / "event-journal.sqlite")
    try:
        store = PgEventStore(pg, journal, services=services, **options)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            try:
                yield store
                with trio.move_on_after(10):
                    await store.flush()
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await journal.close()
