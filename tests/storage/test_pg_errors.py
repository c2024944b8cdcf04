"""asyncpg and socket errors never cross the adapter: they become storage errors."""

from __future__ import annotations

import pytest
import trio

from pratico_daemon.storage.pg_repos import pg_repos
from pratico_daemon.storage.postgres import Postgres
from pratico_daemon.storage.protocols import StorageError, StorageUnavailable
from pratico_daemon.storage.repos import Lesson
from tests.support.pg import create_test_database, drop_test_database, dsn_for
from tests.support.tcp_proxy import TcpProxy


async def test_unreachable_database_is_storage_unavailable(
    aio_loop: object, nursery: trio.Nursery
) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    port = await nursery.start(proxy.run)
    proxy.cut()
    pg = await Postgres.open(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    repos = pg_repos(pg)
    with pytest.raises(StorageUnavailable):
        await repos.lessons.get("L1")
    with pytest.raises(StorageUnavailable):
        await pg.ping()
    await pg.close()


async def test_slow_server_is_unavailable_after_the_timeout(aio_loop: object, pg_dsn: str) -> None:
    pg = await Postgres.open(pg_dsn, query_timeout_s=0.2)

    async def sleepy(conn: object) -> None:
        await conn.execute("SELECT pg_sleep(5)")  # type: ignore[attr-defined]

    with pytest.raises(StorageUnavailable, match="within"):
        await pg.run(sleepy)
    await pg.ping()  # the pool is still usable
    await pg.close()


async def test_missing_schema_is_unavailable_until_migrated(aio_loop: object) -> None:
    name = await create_test_database(migrated=False)
    try:
        pg = await Postgres.open(dsn_for(name))
        with pytest.raises(StorageUnavailable, match="lessons"):
            await pg_repos(pg).lessons.create(Lesson("L1", "o", "t"))
        await pg.close()
    finally:
        await drop_test_database(name)


async def test_other_server_errors_are_storage_errors_not_asyncpg(
    aio_loop: object, pg_dsn: str
) -> None:
    pg = await Postgres.open(pg_dsn)

    async def broken(conn: object) -> None:
        await conn.execute("SELEC 1")  # type: ignore[attr-defined]

    with pytest.raises(StorageError, match="syntax") as info:
        await pg.run(broken)
    assert type(info.value) is StorageError
    await pg.close()
