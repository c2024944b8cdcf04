"""Redis-only checkpoint behaviour: several nodes racing, the index kept honest."""

from __future__ import annotations

import random

import trio

from pratico_daemon.services import Services
from pratico_daemon.storage.protocols import Checkpoint
from pratico_daemon.storage.redis_store import RedisStores, open_redis
from tests.support.redis import RawRedis


async def test_two_nodes_racing_keep_the_newest_version(
    aio_loop: object, services: Services
) -> None:
    """Each node writes a shuffled run of versions; the highest always wins in Redis."""
    async with open_redis(services.config, services) as a, open_redis(
        services.config, services
    ) as b:
        rng = random.Random(7)

        async def node(stores: RedisStores, versions: list[int]) -> None:
            for v in versions:
                await stores.checkpoints.put_many(
                    [Checkpoint("contested", "pratico", v, {"v": v})]
                )

        runs = [rng.sample(range(1, 301), 300) for _ in range(2)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node, a, runs[0])
            nursery.start_soon(node, b, runs[1])
        restored = await b.checkpoints.get("contested")
        assert restored is not None
        assert restored.version == 300
        assert restored.state == {"v": 300}


async def test_list_prunes_index_entries_whose_checkpoint_is_gone(
    aio_loop: object, services: Services, raw_redis: RawRedis
) -> None:
    prefix = services.config.redis.key_prefix
    async with open_redis(services.config, services) as stores:
        await stores.checkpoints.put_many(
            [Checkpoint("kept", "lesson", 1, {}), Checkpoint("removed", "lesson", 1, {})]
        )
        await raw_redis("DEL", f"{prefix}pratico:checkpoint:removed")
        assert [c.room_id for c in await stores.checkpoints.list()] == ["kept"]
    members = await raw_redis("SMEMBERS", f"{prefix}pratico:checkpoints")
    assert members == {b"kept"}


async def test_large_snapshots_are_split_into_bounded_transactions(
    aio_loop: object, services: Services
) -> None:
    async with open_redis(services.config, services) as stores:
        blob = "x" * (5 * 1024 * 1024)
        before = stores.bridge.statistics().batches
        await stores.checkpoints.put_many(
            [Checkpoint(f"big-{i}", "pratico", 1, {"doc": blob}) for i in range(7)]
        )
        # 7 × 5 MiB over 16 MiB requests: at least 3 transactions, never one of 35 MiB.
        assert stores.bridge.statistics().batches - before >= 3
        restored = await stores.checkpoints.list()
        assert sorted(c.room_id for c in restored) == [f"big-{i}" for i in range(7)]
        assert all(len(c.state["doc"]) == len(blob) for c in restored)
