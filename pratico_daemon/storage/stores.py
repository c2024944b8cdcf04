"""`open_stores`: the one place that builds the stores for a configuration.

Production (redis.url / postgres.dsn set): one trio-asyncio loop hosts the
asyncio clients for the daemon's lifetime; Redis and Postgres adapters live in
it. Embedded: SQLite files under `state_dir` and in-process TTL keys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs

from pratico_daemon.services import Services
from pratico_daemon.storage.protocols import CheckpointStore, EventStore, PresenceStore


@attrs.define
class Stores:
    events: EventStore
    checkpoints: CheckpointStore
    presence: PresenceStore
    # Repositories of the products and later stores (bus, blobs) are attributes too.
    repos: Any = None
    bus: Any = None
    blobs: Any = None

    async def flush(self) -> None:
        """Drain: every acknowledged event and pending checkpoint is written."""
        await self.events.flush()


@asynccontextmanager
async def open_stores(services: Services) -> AsyncIterator[Stores]:
    """Open every store for `services.config`, report readiness, close on exit."""
    raise NotImplementedError("filled in by the storage work (issue 3)")
    yield  # pragma: no cover
