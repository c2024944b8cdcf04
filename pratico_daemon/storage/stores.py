"""`open_stores`: the one place that builds the stores for a configuration.

Production (redis.url / postgres.dsn set): one trio-asyncio loop hosts the
asyncio clients for the daemon's lifetime; Redis and Postgres adapters live in
it. Embedded: SQLite files under `state_dir` and in-process TTL keys. The two
halves are chosen independently (Postgres without Redis works, and the
reverse), and neither needs its server to be up at start: the event writer
journals, readiness says what is missing, and both recover by themselves.

What `Stores` holds:
- `events`: `EventStore` (Postgres `room_events` with the outage journal, or
  `pratico.sqlite`);
- `checkpoints`, `presence`, `expirations` (a `trio.MemoryReceiveChannel[str]`
  of expired presence keys, `RESYNC` on overflow): Redis or in-process;
- `repos`: `repos.Repos` with `.lessons`, `.rooms`, `.chat`;
- `pg`: the shared `storage.postgres.Postgres` pool, None in embedded mode
  (for repositories that add their own SQL, e.g. conversation);
- `bus`, `blobs`: filled in by later stages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import trio

from pratico_daemon import logs
from pratico_daemon.services import Services
from pratico_daemon.storage.protocols import (
    CheckpointStore,
    EventStore,
    PresenceStore,
    StorageUnavailable,
)
from pratico_daemon.storage.repos import Repos

log = logs.get("storage")


@attrs.define
class Stores:
    events: EventStore
    checkpoints: CheckpointStore
    presence: PresenceStore
    expirations: trio.MemoryReceiveChannel[str] | None = None
    repos: Repos | None = None
    pg: Any = None
    bus: Any = None
    blobs: Any = None

    async def flush(self) -> None:
        """Drain: every acknowledged event is written (checkpoints have their own flush)."""
        await self.events.flush()


@asynccontextmanager
async def open_stores(services: Services) -> AsyncIterator[Stores]:
    """Open every store for `services.config`, report readiness, close on exit."""
    config = services.config
    state_dir = config.state_dir()
    async with AsyncExitStack() as stack:
        if config.postgres.dsn or config.redis.url:
            from pratico_daemon.storage import aio

            await stack.enter_async_context(aio.open_loop())

        pg = None
        if config.postgres.dsn:
            pg, events, repos = await _open_postgres(stack, services)
        else:
            from pratico_daemon.storage.embedded_sql import open_embedded_sql

            path = state_dir / "pratico.sqlite"
            sql = await stack.enter_async_context(open_embedded_sql(path, services=services))
            services.health.set("storage", True, f"embedded ({path})")
            events, repos = sql.events, sql.repos

        checkpoints: CheckpointStore
        presence: PresenceStore
        expirations: trio.MemoryReceiveChannel[str]
        if config.redis.url:
            from pratico_daemon.storage.redis_store import open_redis

            shared = await stack.enter_async_context(open_redis(config, services))
            checkpoints, presence, expirations = (
                shared.checkpoints, shared.presence, shared.expirations)
        else:
            from pratico_daemon.storage.embedded_checkpoints import open_embedded_checkpoints
            from pratico_daemon.storage.embedded_keys import open_embedded_keys

            keys = await stack.enter_async_context(open_embedded_keys(config, services))
            cps = await stack.enter_async_context(open_embedded_checkpoints(config, services))
            checkpoints, presence, expirations = cps.checkpoints, keys.presence, keys.expirations

        yield Stores(events=events, checkpoints=checkpoints, presence=presence,
                     expirations=expirations, repos=repos, pg=pg)


async def _open_postgres(stack: AsyncExitStack, services: Services) -> tuple[Any, Any, Repos]:
    from pratico_daemon.storage import migrate
    from pratico_daemon.storage.pg_events import open_pg_events
    from pratico_daemon.storage.pg_repos import pg_repos
    from pratico_daemon.storage.postgres import Postgres

    config = services.config
    assert config.postgres.dsn is not None
    # min_size=0: the pool connects on first use, so a daemon starts (and
    # journals) while Postgres is down instead of refusing to start.
    pg = await Postgres.open(config.postgres.dsn, min_size=0,
                             max_size=max(2, config.postgres.pool_max))
    stack.push_async_callback(pg.close)
    migrate_pending = False
    if config.postgres.migrate_on_start:
        try:
            applied = await migrate.apply(pg)
            log.info("postgres schema up to date (%d migrations applied)", applied)
        except StorageUnavailable as exc:
            log.warning("postgres unreachable at start, migrating once it answers: %s", exc)
            migrate_pending = True
    state_dir = config.state_dir()
    events = await stack.enter_async_context(
        open_pg_events(pg, state_dir, services=services, migrate_pending=migrate_pending))
    return pg, events, pg_repos(pg)
