"""The outage journal: where acknowledged events wait while Postgres is away.

An append-only table in its own SQLite file (`state_dir/event-journal.sqlite`),
WAL with `synchronous=FULL`. SQLite rather than a hand-rolled fsync'd file
because it gives, for free, what a hand-rolled log must get right: a batch is
appended atomically (a crash mid-append leaves none of it, never half a record
to skip on replay), the replayed prefix is dropped with one DELETE instead of
rewriting the file, and the order is the `seq` primary key. The cost — one
fsync per group commit — is what durability costs with any format.

Rows keep the event id, so replaying into Postgres with ON CONFLICT DO NOTHING
is idempotent: a crash between "inserted in Postgres" and "deleted from the
journal" replays a chunk twice and changes nothing.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from collections.abc import Sequence
from pathlib import Path

from pratico_daemon.storage.event_writer import EventRow
from pratico_daemon.storage.protocols import StorageUnavailable
from pratico_daemon.storage.sqlite_file import SqliteFile, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          BLOB NOT NULL,
    created_us  INTEGER NOT NULL,
    room_id     TEXT NOT NULL,
    user_id     TEXT,
    type        TEXT NOT NULL,
    data        TEXT NOT NULL
)
"""
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_us(when: dt.datetime) -> int:
    return (when - _EPOCH) // dt.timedelta(microseconds=1)


def from_us(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


class Journal:
    """Append batches, read the oldest chunk, drop what was replayed. `depth` is live."""

    def __init__(self, db: SqliteFile, depth: int) -> None:
        self._db = db
        self.depth = depth

    def __repr__(self) -> str:
        return f"<Journal {self._db.path} {self.depth} events>"

    @classmethod
    async def open(cls, path: Path) -> Journal:
        db = await SqliteFile.open(path, synchronous="FULL")

        def prepare(conn: sqlite3.Connection) -> int:
            conn.execute(_SCHEMA)
            return int(conn.execute("SELECT count(*) FROM journal").fetchone()[0])

        return cls(db, await db.call(prepare))

    async def close(self) -> None:
        await self._db.close()

    async def append(self, rows: Sequence[EventRow]) -> None:
        """Durably append a batch (all or nothing); `StorageUnavailable` if the disk refuses."""
        records = [(r[0].bytes, to_us(r[1]), r[2], r[3], r[4], r[5]) for r in rows]

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO journal (id, created_us, room_id, user_id, type, data)"
                " VALUES (?, ?, ?, ?, ?, ?)", records)

        try:
            await self._db.call(transaction, write)
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"outage journal unwritable: {exc}") from exc
        self.depth += len(rows)

    async def oldest(self, limit: int) -> tuple[int, list[EventRow]]:
        """The `limit` oldest rows in append order, and the seq of the last one (0 if none)."""

        def read(conn: sqlite3.Connection) -> list[tuple[int, EventRow]]:
            cur = conn.execute(
                "SELECT seq, id, created_us, room_id, user_id, type, data FROM journal"
                " ORDER BY seq LIMIT ?", (limit,))
            return [(seq, (uuid.UUID(bytes=i), from_us(c), r, u, t, d))
                    for seq, i, c, r, u, t, d in cur]

        rows = await self._db.call(read)
        return (rows[-1][0] if rows else 0), [row for _, row in rows]

    async def drop_through(self, seq: int) -> None:
        """Forget every row up to and including `seq` (they are in Postgres now)."""

        def delete(conn: sqlite3.Connection) -> int:
            return int(conn.execute("DELETE FROM journal WHERE seq <= ?", (seq,)).rowcount)

        dropped = await self._db.call(transaction, delete)
        self.depth -= dropped  # not `-= await …`: that reads depth before the await
