"""One SQL body for both stores: a unit of work runs on PostgreSQL or on SQLite.

The conversation repository is written once, as `async def unit(tx)` functions
that issue SQL with `$1`-style parameters through a tiny `Tx` interface. A
`Database` runs a unit as ONE transaction:

- `PgDatabase`: the unit runs on the asyncio side of the bridge inside
  `conn.transaction()`, so a whole unit is one crossing (STACK-NOTES.md)
  and asyncpg errors are mapped by `storage.postgres`.
- `SqliteDatabase`: the same unit is driven to completion synchronously
  (SQLite calls never suspend, so the coroutine finishes on its first step)
  under `BEGIN IMMEDIATE`, in a worker thread (or inline for deterministic
  tests). `$n` becomes `?n`, `::type` casts and `FOR UPDATE` are dropped
  (SQLite serialises writers anyway), datetimes are stored as fixed-width
  ISO 8601 UTC text so that they sort as instants.

Cancellation never leaves half a unit: PostgreSQL rolls back a transaction
whose connection is released mid-way, and a SQLite unit, once in its thread,
runs to COMMIT or ROLLBACK before the caller hears about the cancel.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import trio

from pratico_daemon.storage.protocols import Conflict, InvalidData, StorageUnavailable

T = TypeVar("T")
Row = dict[str, Any]


class Tx(Protocol):
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    async def execute(self, sql: str, *args: Any) -> None: ...


Unit = Callable[[Tx], Awaitable[T]]


class Database(Protocol):
    dialect: str

    async def transaction(self, unit: Unit[T]) -> T: ...


def as_datetime(value: Any) -> dt.datetime | None:
    """A timestamp column as an aware UTC datetime, whichever store it came from."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(value).astimezone(dt.UTC)


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 with a Z, as clients see instants."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


# -- PostgreSQL ---------------------------------------------------------------------------


def _pg_row(record: Mapping[str, Any]) -> Row:
    return {k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in record.items()}


class _PgTx:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [_pg_row(r) for r in await self._conn.fetch(sql, *args)]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        record = await self._conn.fetchrow(sql, *args)
        return None if record is None else _pg_row(record)

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(sql, *args)


async def _pg_unit(conn: Any, unit: Unit[T]) -> T:
    async with conn.transaction():
        return await unit(_PgTx(conn))


class PgDatabase:
    """Units on a `storage.postgres.Postgres` pool: one transaction, one bridge crossing."""

    dialect = "postgres"

    def __init__(self, pg: Any) -> None:
        self.pg = pg

    def __repr__(self) -> str:
        return f"<PgDatabase {self.pg!r}>"

    async def transaction(self, unit: Unit[T]) -> T:
        return await self.pg.run(_pg_unit, unit)  # type: ignore[no-any-return]


# -- SQLite -------------------------------------------------------------------------------

_PARAM = re.compile(r"\$(\d+)")
_CAST = re.compile(r"::\w+")
_FOR_UPDATE = re.compile(r"\s+FOR UPDATE(\s+OF\s+\w+)?", re.IGNORECASE)


def _sqlite_sql(sql: str) -> str:
    return _FOR_UPDATE.sub("", _CAST.sub("", _PARAM.sub(r"?\1", sql)))


def _sqlite_param(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _run(self, sql: str, args: tuple[Any, ...]) -> sqlite3.Cursor:
        return self._conn.execute(_sqlite_sql(sql), [_sqlite_param(a) for a in args])

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(r) for r in self._run(sql, args).fetchall()]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row = self._run(sql, args).fetchone()
        return None if row is None else dict(row)

    async def execute(self, sql: str, *args: Any) -> None:
        self._run(sql, args)


def _drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (SQLite units) to its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a SQLite unit of work awaited something other than the database")


class SqliteDatabase:
    """A SQLite file; each unit is one `BEGIN IMMEDIATE … COMMIT`."""

    dialect = "sqlite"

    def __init__(self, path: str | Path, *, threaded: bool = True,
                 schema: str | None = None) -> None:
        self.path = str(path)
        self.threaded = threaded
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=5000")
        if schema is not None:
            self._conn.executescript(schema)
        # One connection, one writer at a time.
        self._limiter = trio.CapacityLimiter(1)

    def __repr__(self) -> str:
        return f"<SqliteDatabase {self.path}>"

    def close(self) -> None:
        self._conn.close()

    def _run_unit(self, unit: Unit[T]) -> T:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"sqlite: {exc}") from exc
        try:
            result: T = _drive(unit(_SqliteTx(conn)))  # type: ignore[arg-type]
        except BaseException as exc:
            conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                if "UNIQUE" in str(exc):
                    raise Conflict(str(exc)) from exc
                raise InvalidData(str(exc)) from exc
            if isinstance(exc, sqlite3.OperationalError):
                raise StorageUnavailable(f"sqlite: {exc}") from exc
            raise
        conn.execute("COMMIT")
        return result

    async def transaction(self, unit: Unit[T]) -> T:
        if not self.threaded:
            await trio.lowlevel.checkpoint()
            return self._run_unit(unit)
        return await trio.to_thread.run_sync(self._run_unit, unit, limiter=self._limiter)
