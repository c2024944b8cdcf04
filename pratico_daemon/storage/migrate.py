"""Numbered SQL migrations (`migrations/NNN_name.sql`), applied in order, once.

Each file runs in its own transaction and is recorded in `schema_migrations`
with the same transaction, so a failure leaves the schema at the previous
version, never half-way. A session-level advisory lock serialises daemons
that start at the same moment: the second one waits, then finds nothing left
to apply. Files are never edited once released; a change is a new file.
"""

from __future__ import annotations

import re
from importlib import resources

import asyncpg

from pratico_daemon import logs
from pratico_daemon.config import Config
from pratico_daemon.storage import aio
from pratico_daemon.storage.postgres import Postgres

log = logs.get("storage.migrate")

# Any constant unique to this schema; pg_advisory_lock takes a bigint.
ADVISORY_LOCK_KEY = 0x70726174_69636F01  # "pratico" + 1
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every shipped migration, in order."""
    folder = resources.files("pratico_daemon.storage") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number: {versions}")
    return found


async def apply_on(conn: asyncpg.Connection) -> int:
    """Apply the missing migrations on `conn` (asyncio side); returns how many."""
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = 0
        for version, name, sql in migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            log.info("migration %s applied", name)
            applied += 1
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


async def apply(pg: Postgres) -> int:
    """Apply missing migrations through an open `Postgres` (one crossing)."""
    return await pg.run(apply_on, timeout_s=300)


async def run(config: Config) -> int:
    """`pratico-daemon migrate`: open a loop and a pool, migrate, close; returns count."""
    if not config.postgres.dsn:
        log.info("no postgres.dsn: nothing to migrate (embedded mode migrates its own file)")
        return 0
    async with aio.open_loop():
        pg = await Postgres.open(config.postgres.dsn, min_size=0, max_size=1)
        try:
            return await apply(pg)
        finally:
            await pg.close()
