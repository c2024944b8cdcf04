"""Room checkpoints in `state_dir/checkpoints.sqlite`, for the embedded mode.

Same rule as Redis: an upsert whose `WHERE excluded.version > version` makes
an older snapshot a no-op, inside one transaction per `put_many` (all or
nothing). WAL with `synchronous=NORMAL`: a commit survives the process being
killed (kill -9 loses nothing the OS has; only a power cut may lose the last
commits, which is what a 100 ms checkpoint target accepts anyway). sqlite3
blocks, so calls run in one worker thread at a time; trio never abandons a
running call on cancellation, so a transaction is always finished before its
caller unwinds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from pratico_daemon.config import Config
from pratico_daemon.services import Services
from pratico_daemon.storage import checkpoint_codec
from pratico_daemon.storage.protocols import Checkpoint, StorageUnavailable
from pratico_daemon.storage.redis_store import check_key

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    room_id TEXT PRIMARY KEY,
    kind    TEXT NOT NULL,
    version INTEGER NOT NULL,
    data    BLOB NOT NULL
)
"""
_UPSERT = """
INSERT INTO checkpoints (room_id, kind, version, data) VALUES (?, ?, ?, ?)
ON CONFLICT (room_id) DO UPDATE
SET kind = excluded.kind, version = excluded.version, data = excluded.data
WHERE excluded.version > checkpoints.version
"""


class EmbeddedCheckpoints:
    """`CheckpointStore` on SQLite."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path, *, max_bytes: int,
        max_schema: int = checkpoint_codec.MAX_SCHEMA,
    ) -> None:
        self._conn = conn
        self.path = path
        self._limiter = trio.CapacityLimiter(1)
        self._max_bytes = max_bytes
        self._max_schema = max_schema

    def __repr__(self) -> str:
        return f"<EmbeddedCheckpoints {self.path}>"

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except sqlite3.OperationalError as exc:  # disk full, locked for 30 s, I/O error
            raise StorageUnavailable(f"sqlite checkpoints: {exc}") from exc

    async def put_many(self, checkpoints: Sequence[Checkpoint]) -> None:
        """One transaction; every snapshot is validated before anything is written."""
        rows = [
            (
                check_key(cp.room_id), cp.kind, cp.version,
                checkpoint_codec.encode(
                    cp, max_bytes=self._max_bytes, max_schema=self._max_schema
                ),
            )
            for cp in checkpoints
        ]
        if rows:
            await self._run(self._write, rows)

    def _write(self, rows: list[tuple[str, str, int, bytes]]) -> None:
        with self._conn:  # BEGIN … COMMIT, or ROLLBACK on error
            self._conn.executemany(_UPSERT, rows)

    async def get(self, room_id: str) -> Checkpoint | None:
        row = await self._run(
            lambda: self._conn.execute(
                "SELECT data FROM checkpoints WHERE room_id = ?", (check_key(room_id),)
            ).fetchone()
        )
        return None if row is None else self._decode(row[0], room_id)

    async def delete(self, room_id: str) -> None:
        def delete() -> None:
            with self._conn:
                self._conn.execute("DELETE FROM checkpoints WHERE room_id = ?", (room_id,))

        check_key(room_id)
        await self._run(delete)

    async def list(self, kind: str | None = None) -> list[Checkpoint]:
        """Every restorable snapshot; unreadable ones are logged and skipped."""
        args: tuple[str, ...] = ()
        if kind is None:
            query = "SELECT room_id, data FROM checkpoints ORDER BY room_id"
        else:
            query = "SELECT room_id, data FROM checkpoints WHERE kind = ? ORDER BY room_id"
            args = (kind,)
        rows = await self._run(lambda: self._conn.execute(query, args).fetchall())
        decoded = (self._decode(data, room_id) for room_id, data in rows)
        return [cp for cp in decoded if cp is not None]

    def _decode(self, data: bytes, room_id: str) -> Checkpoint | None:
        return checkpoint_codec.decode(
            data, where=f"{self.path.name}:{room_id}", max_schema=self._max_schema
        )


@attrs.define
class EmbeddedCheckpointStores:
    checkpoints: EmbeddedCheckpoints


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(_SCHEMA)
    conn.isolation_level = "DEFERRED"  # from here on `with conn:` is one transaction
    return conn


@asynccontextmanager
async def open_embedded_checkpoints(
    config: Config, services: Services
) -> AsyncIterator[EmbeddedCheckpointStores]:
    """Open (creating it if needed) `state_dir/checkpoints.sqlite`; closed on exit."""
    path = config.state_dir() / "checkpoints.sqlite"
    conn = await trio.to_thread.run_sync(_connect, path)
    store = EmbeddedCheckpoints(conn, path, max_bytes=config.limits.max_snapshot_bytes)
    services.health.set("checkpoints", True, f"embedded ({path})")
    try:
        yield EmbeddedCheckpointStores(checkpoints=store)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(conn.close, limiter=store._limiter)
