"""One SQLite connection driven from trio: the embedded store's and the journal's.

sqlite3 blocks, so every call runs in a worker thread (`trio.to_thread`). The
connection is opened with `check_same_thread=False` and a `CapacityLimiter(1)`
admits one call at a time: simpler than a dedicated thread with its own queue,
and trio's thread cache makes the hop cheap (~30 µs). A call is never
abandoned on cancellation (trio waits for the thread), so a transaction is
always finished — committed or rolled back — before the caller unwinds.

WAL with `synchronous=FULL`: each commit is on disk before it returns (the
durability an acknowledged event needs), and the cost is paid once per group
commit, not once per event.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

T = TypeVar("T")


class SqliteFile:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._limiter = trio.CapacityLimiter(1)

    def __repr__(self) -> str:
        return f"<SqliteFile {self.path}>"

    @classmethod
    async def open(cls, path: Path, *, synchronous: str = "FULL") -> SqliteFile:
        def connect() -> sqlite3.Connection:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            return conn

        return cls(await trio.to_thread.run_sync(connect), path)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(conn, *args)` in a worker thread, one call at a time."""
        return await trio.to_thread.run_sync(fn, self.conn, *args, limiter=self._limiter)

    async def close(self) -> None:
        await trio.to_thread.run_sync(self.conn.close, limiter=self._limiter)


def transaction(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(conn, *args)` inside BEGIN IMMEDIATE … COMMIT (rolled back on error)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result
