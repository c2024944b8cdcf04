"""PostgreSQL fixtures: one fresh, migrated database per test, cloned from a template.

The template (`pratico_tmpl_<hash of the migrations>`) is built once — by the
first test that needs it, in any process — and reused until the migrations
change. `CREATE DATABASE … TEMPLATE` copies it in tens of milliseconds, far
cheaper than migrating per test, and each test owns its database outright, so
tests never see each other's rows and need no cleanup beyond the DROP.

The admin statements run in a short-lived trio-asyncio loop of their own;
`aio_loop` is the loop a test's own asyncpg clients live in.

Register with `pytest_plugins = ["tests.support.pg"]` in conftest.py.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import attrs
import pytest
import trio

from pratico_daemon.storage import migrate
from pratico_daemon.storage.aio import aio_as_trio, open_loop
from pratico_daemon.storage.embedded_sql import open_embedded_sql
from pratico_daemon.storage.pg_events import open_pg_events
from pratico_daemon.storage.pg_repos import pg_repos
from pratico_daemon.storage.postgres import Postgres
from pratico_daemon.storage.repos import Repos

PG_URL = os.environ.get("PRATICO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
_template: str | None = None


def dsn_for(database: str) -> str:
    return f"{PG_URL}/{database}"


def template_name() -> str:
    digest = hashlib.sha256()
    for _, name, sql in migrate.migrations():
        digest.update(name.encode() + sql.encode())
    return f"pratico_tmpl_{digest.hexdigest()[:12]}"


async def _admin(fn: object, *args: object) -> object:
    """Run `fn(conn, *args)` (asyncio side) on the `postgres` database, in its own loop."""

    async def go() -> object:
        conn = await asyncpg.connect(dsn_for("postgres"))
        try:
            return await fn(conn, *args)  # type: ignore[operator]
        finally:
            await conn.close()

    result: list[object] = []

    async def isolated() -> None:
        # A child task has its own copy of the context: the loop opened here
        # never touches the current-loop variable pytest-trio shares between
        # a test and its fixtures (they set up concurrently).
        async with open_loop():
            result.append(await aio_as_trio(go)())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(isolated)
    return result[0]


async def _build_template(conn: asyncpg.Connection, name: str) -> None:
    if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
        return
    building = f"{name}_b{uuid.uuid4().hex[:8]}"
    await conn.execute(f'CREATE DATABASE "{building}"')
    target = await asyncpg.connect(dsn_for(building))
    try:
        await migrate.apply_on(target)
    finally:
        await target.close()
    try:
        await conn.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
    except asyncpg.DuplicateDatabaseError:  # another process won the race: use theirs
        await conn.execute(f'DROP DATABASE "{building}"')


async def ensure_template() -> str:
    global _template
    if _template is None:
        name = template_name()
        await _admin(_build_template, name)
        _template = name
    return _template


async def _create(conn: asyncpg.Connection, name: str, template: str) -> None:
    await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


async def _drop(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def create_test_database(*, migrated: bool = True) -> str:
    """A new database (a clone of the migrated template, or empty); returns its name."""
    name = f"pratico_t_{uuid.uuid4().hex[:12]}"
    template = await ensure_template() if migrated else "template0"
    await _admin(_create, name, template)
    return name


async def drop_test_database(name: str) -> None:
    await _admin(_drop, name)


@pytest.fixture
async def pg_dsn() -> AsyncIterator[str]:
    """DSN of a fresh, migrated database owned by this test."""
    name = await create_test_database()
    try:
        yield dsn_for(name)
    finally:
        await drop_test_database(name)


@pytest.fixture
async def empty_pg_dsn() -> AsyncIterator[str]:
    """DSN of a fresh database with no schema at all (migration tests)."""
    name = await create_test_database(migrated=False)
    try:
        yield dsn_for(name)
    finally:
        await drop_test_database(name)


@pytest.fixture
async def aio_loop() -> AsyncIterator[object]:
    """The trio-asyncio loop a test's asyncio clients live in (one per test)."""
    async with open_loop() as loop:
        yield loop


@attrs.define
class SqlBackend:
    """An `EventStore` and the repositories on one backend, for contract tests."""

    kind: str
    events: Any
    repos: Repos
    state_dir: Path


@asynccontextmanager
async def open_backend(kind: str, state_dir: Path, dsn: str | None = None,
                       services: Any = None, **options: Any) -> AsyncIterator[SqlBackend]:
    """Postgres (needs `dsn` and a current trio-asyncio loop) or embedded SQLite."""
    if kind == "postgres":
        assert dsn is not None
        pg = await Postgres.open(dsn, max_size=4)
        try:
            async with open_pg_events(pg, state_dir, services=services, **options) as events:
                yield SqlBackend(kind, events, pg_repos(pg), state_dir)
        finally:
            await pg.close()
    else:
        async with open_embedded_sql(state_dir / "pratico.sqlite", services=services,
                                     **options) as sql:
            yield SqlBackend(kind, sql.events, sql.repos, state_dir)


@pytest.fixture(params=["postgres", "embedded"])
async def sql_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlBackend]:
    """The contract suite's subject: each test runs once per backend."""
    if request.param == "postgres":
        name = await create_test_database()
        try:
            async with open_loop(), open_backend("postgres", tmp_path, dsn_for(name)) as b:
                yield b
        finally:
            await drop_test_database(name)
    else:
        async with open_backend("embedded", tmp_path) as b:
            yield b
