"""PostgreSQL through asyncpg, confined to this adapter.

`Postgres` owns one asyncpg pool inside the daemon's trio-asyncio loop and
offers `run(fn, *args)`: `fn` is an asyncio coroutine function that receives a
pooled connection; the whole of it is ONE crossing of the trio/asyncio bridge
(~100 µs, STACK-NOTES.md), so callers put a whole unit of work (a transaction,
a batch) in one `fn` rather than crossing per statement.

The loop is captured when the pool is opened and addressed explicitly
(`loop.run_aio_coroutine`), not looked up from the caller's context: room
tasks, HTTP handlers and tests call the stores from tasks that were not
spawned inside the `open_loop()` block, where `aio_as_trio` finds no loop.

Every library error is translated here (httpcore's `map_exceptions` idea):
- the server does not answer (refused, reset, closed mid-query, timed out,
  shutting down, too many connections) → `StorageUnavailable`;
- a uniqueness rule → `Conflict`;
- the data itself is refused (bad text, out of range, a CHECK) → `InvalidData`.
Nothing above this module sees an asyncpg exception.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import asyncpg
import trio
import trio_asyncio

from pratico_daemon import logs
from pratico_daemon.storage.protocols import (
    Conflict,
    InvalidData,
    StorageError,
    StorageUnavailable,
)

log = logs.get("storage.postgres")
T = TypeVar("T")

# Connecting through a dead route must fail fast enough for the writer to
# journal instead of making callers wait; 5 s is asyncpg's order of magnitude
# for a LAN connect and well below a client's ack patience.
CONNECT_TIMEOUT_S = 5.0

# SQLSTATE classes (PostgreSQL appendix A): 08 connection exception, 53
# insufficient resources, 57 operator intervention (admin shutdown, crash
# shutdown, cannot connect now), 58 system error.
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58")
_NOT_MIGRATED = ("42P01", "3F000")  # undefined_table, invalid_schema_name
# 22 data exception, 23 integrity violation (23505 unique handled apart).
_DATA_CLASSES = ("22", "23")


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc` means "the server did not answer", not "it said no"."""
    if isinstance(exc, StorageUnavailable):
        return True
    if isinstance(exc, OSError | TimeoutError | EOFError):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        # Connection closed / does not exist / lost mid-operation.
        return True
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        # The pool's bookkeeping after a connection died under it ("release()
        # called on a free connection holder", seen when a connection was lost
        # while checked out): the operation's outcome is as unknown as after a
        # lost connection, and retrying on another connection is what helps.
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        # A table that is not there yet: the schema is still being migrated
        # (a daemon that started while Postgres was down migrates when it
        # answers). Callers retry, as for a server that does not answer.
        return state[:2] in _UNAVAILABLE_CLASSES or state in _NOT_MIGRATED
    return False


def translate(exc: BaseException) -> BaseException:
    """The storage error for a library error (or `exc` itself if it is not one)."""
    if isinstance(exc, StorageError):
        return exc
    if is_unavailable(exc):
        return StorageUnavailable(f"postgres unavailable: {type(exc).__name__}: {exc}")
    if isinstance(exc, asyncpg.UniqueViolationError):
        return Conflict(getattr(exc, "constraint_name", None) or str(exc))
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        if state[:2] in _DATA_CLASSES:
            return InvalidData(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, asyncpg.DataError | UnicodeError):
        return InvalidData(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, asyncpg.PostgresError):
        # Anything else (an undefined table before migrations, a bug in our SQL)
        # still never leaks asyncpg above the adapter.
        return StorageError(f"{type(exc).__name__}: {exc}")
    return exc


@contextmanager
def map_errors() -> Iterator[None]:
    """Re-raise asyncpg/OS errors as `StorageUnavailable`/`Conflict`/`InvalidData`."""
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError,
            OSError, TimeoutError, EOFError, UnicodeError) as exc:
        mapped = translate(exc)
        if mapped is exc:
            raise
        raise mapped from exc


class Postgres:
    """An asyncpg pool living in the current trio-asyncio loop (see `open`)."""

    def __init__(self, pool: asyncpg.Pool, dsn: str, loop: Any, *,
                 query_timeout_s: float = 10.0) -> None:
        self.pool = pool
        self.loop = loop
        self.dsn = dsn
        self.query_timeout_s = query_timeout_s

    def __repr__(self) -> str:
        return f"<Postgres {self.pool.get_size()} connections ({self.pool.get_idle_size()} idle)>"

    @classmethod
    async def open(cls, dsn: str, *, min_size: int = 0, max_size: int = 8,
                   query_timeout_s: float = 10.0) -> Postgres:
        """Create the pool (inside an `aio.open_loop()`); no connection is made yet.

        `min_size=0` lets the daemon start while Postgres is down: readiness
        says so and the event writer journals until it answers.
        """
        loop = trio_asyncio.current_loop.get()
        if loop is None:
            raise RuntimeError("Postgres.open needs a running aio.open_loop()")
        pool = await loop.run_aio_coroutine(_create_pool(dsn, min_size, max_size))
        return cls(pool, dsn, loop, query_timeout_s=query_timeout_s)

    async def close(self) -> None:
        """Close gracefully, even from a cancelled scope (the daemon's exit is one):
        terminated sockets would otherwise be left for the garbage collector."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(5):
                await self.loop.run_aio_coroutine(self.pool.close())
                return
            self.pool.terminate()

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any,
                  timeout_s: float | None = None) -> T:
        """`await fn(conn, *args)` on a pooled connection: one bridge crossing.

        A query that takes longer than `timeout_s` (default `query_timeout_s`)
        is cancelled and reported as `StorageUnavailable`: a server that does
        not answer is indistinguishable from one that is gone.
        """
        limit = self.query_timeout_s if timeout_s is None else timeout_s
        with trio.move_on_after(limit) as scope, map_errors():
            return await self.loop.run_aio_coroutine(_with_connection(self.pool, fn, args))
        assert scope.cancelled_caught
        raise StorageUnavailable(f"postgres did not answer within {limit:.1f}s")

    async def ping(self) -> None:
        await self.run(_ping, timeout_s=CONNECT_TIMEOUT_S)


async def _create_pool(dsn: str, min_size: int, max_size: int) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, timeout=CONNECT_TIMEOUT_S,
        # Prepared statements are cached per connection; our statements are few.
        statement_cache_size=64,
    )


async def _with_connection(pool: asyncpg.Pool, fn: Callable[..., Awaitable[T]],
                           args: tuple[Any, ...]) -> T:
    async with pool.acquire() as conn:
        return await fn(conn, *args)


async def _ping(conn: asyncpg.Connection) -> None:
    await conn.fetchval("SELECT 1")
