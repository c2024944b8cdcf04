"""Opening the conversation store and bus for the daemon's configuration.

Embedded (no postgres.dsn): a SQLite file `state_dir/conversation.sqlite3`
holds the tables, the outbox and the bus. Production: the repository runs on
the daemon's shared pool (`services.stores.pg`, migrated by the storage
layer; a pool of our own when the stores did not open one, e.g. in tools),
and the bus on Redis Streams through a client in a trio-asyncio loop of our
own; without `redis.url` the bus is the SQLite file.
Everything is opened in `run_service` and closed when it is cancelled.
"""

from __future__ import annotations

from typing import Any

import trio

from pratico_daemon import logs
from pratico_daemon.conversation.bus import RedisBus, SqliteBus
from pratico_daemon.conversation.db import PgDatabase, SqliteDatabase
from pratico_daemon.conversation.repo import ConversationRepo
from pratico_daemon.conversation.schema_sqlite import SCHEMA
from pratico_daemon.conversation.service import ConversationService

log = logs.get("conversation")


def open_embedded(state_dir: Any, *, threaded: bool = True) -> tuple[ConversationRepo, SqliteBus]:
    """The repository and bus on one SQLite file under `state_dir`."""
    from pathlib import Path

    folder = Path(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    db = SqliteDatabase(folder / "conversation.sqlite3", threaded=threaded, schema=SCHEMA)
    return ConversationRepo(db), SqliteBus(db)


async def run_service(services: Any, service: ConversationService, *,
                      task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Open the backend for `services.config`, then run the service until cancelled."""
    config = services.config
    if service.rooms is None:
        service.rooms = services.rooms
    if config.postgres.dsn is None:
        repo, bus = open_embedded(config.state_dir())
        service.attach_backend(repo, bus)
        try:
            await service.run(task_status=task_status)
        finally:
            repo.db.close()  # type: ignore[attr-defined]
        return

    from pratico_daemon.storage import aio, migrate
    from pratico_daemon.storage.postgres import Postgres

    shared = getattr(getattr(services, "stores", None), "pg", None)
    async with aio.open_loop():
        pg = shared or await Postgres.open(config.postgres.dsn, min_size=0,
                                           max_size=max(2, config.postgres.pool_max // 2))
        redis_bus = None
        try:
            if shared is None and config.postgres.migrate_on_start:
                await migrate.apply(pg)
            repo = ConversationRepo(PgDatabase(pg))
            if config.redis.url:
                redis_bus = await RedisBus.open(config.redis.url, config.redis.key_prefix)
                service.attach_backend(repo, redis_bus)
            else:
                _, sqlite_bus = open_embedded(config.state_dir())
                service.attach_backend(repo, sqlite_bus)
            await service.run(task_status=task_status)
        finally:
            with trio.CancelScope(shield=True):
                if redis_bus is not None:
                    await redis_bus.aclose()
                if shared is None:
                    await pg.close()
