"""One contract for `CheckpointStore`: Redis and the embedded SQLite file behave alike."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import attrs
import orjson
import pytest

from pratico_daemon.services import Services
from pratico_daemon.storage.embedded_checkpoints import open_embedded_checkpoints
from pratico_daemon.storage.protocols import Checkpoint, CheckpointStore, InvalidData
from pratico_daemon.storage.redis_store import open_redis
from tests.conftest import make_config
from tests.support.redis import RawRedis, make_services


@attrs.frozen
class Kit:
    store: CheckpointStore
    # Writes raw bytes where the store keeps a room's checkpoint (corruption tests).
    inject: Callable[[str, bytes], Awaitable[None]]


@pytest.fixture(params=["redis", "embedded"])
async def kit(
    request: pytest.FixtureRequest, aio_loop: object, services: Services,
    raw_redis: RawRedis, tmp_path: Path,
) -> AsyncIterator[Kit]:
    if request.param == "redis":
        prefix = services.config.redis.key_prefix

        async def inject_redis(room_id: str, raw: bytes) -> None:
            await raw_redis("HSET", f"{prefix}pratico:checkpoint:{room_id}", "v", 1, "d", raw)
            await raw_redis("SADD", f"{prefix}pratico:checkpoints", room_id)

        async with open_redis(services.config, services) as stores:
            yield Kit(stores.checkpoints, inject_redis)
    else:
        embedded = make_services(make_config(tmp_path / "embedded"))

        async def inject_sqlite(room_id: str, raw: bytes) -> None:
            path = embedded.config.state_dir() / "checkpoints.sqlite"
            with sqlite3.connect(path) as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO checkpoints VALUES (?, 'pratico', 1, ?)",
                    (room_id, raw),
                )
            conn.close()

        async with open_embedded_checkpoints(embedded.config, embedded) as stores:
            yield Kit(stores.checkpoints, inject_sqlite)


def cp(room_id: str, version: int, kind: str = "pratico", **state: object) -> Checkpoint:
    return Checkpoint(room_id=room_id, kind=kind, version=version, state=state or {"page": 1})


async def test_put_get_delete_roundtrip(kit: Kit) -> None:
    snapshot = cp("r1", 3, page=4, participants=[{"id": "p1", "name": "Zoé"}], quiz=None)
    await kit.store.put_many([snapshot])
    assert await kit.store.get("r1") == snapshot
    await kit.store.delete("r1")
    assert await kit.store.get("r1") is None
    assert await kit.store.list() == []
    await kit.store.delete("r1")  # deleting twice is fine


async def test_older_version_never_overwrites_newer(kit: Kit) -> None:
    await kit.store.put_many([cp("r1", 5, page=5)])
    await kit.store.put_many([cp("r1", 4, page=4)])
    await kit.store.put_many([cp("r1", 5, page=99)])  # same version: a retry, not a change
    assert (await kit.store.get("r1")) == cp("r1", 5, page=5)
    # Within one batch too: the highest version wins whatever the order.
    await kit.store.put_many([cp("r2", 2, page=2), cp("r2", 7, page=7), cp("r2", 6, page=6)])
    assert (await kit.store.get("r2")) == cp("r2", 7, page=7)


async def test_list_returns_every_room_and_filters_kind(kit: Kit) -> None:
    await kit.store.put_many(
        [cp(f"room-{i}", i, kind="lesson" if i % 2 else "pratico") for i in range(1, 21)]
    )
    everything = await kit.store.list()
    assert sorted(c.room_id for c in everything) == sorted(f"room-{i}" for i in range(1, 21))
    lessons = await kit.store.list("lesson")
    assert {c.room_id for c in lessons} == {f"room-{i}" for i in range(1, 21, 2)}
    assert all(c.kind == "lesson" for c in lessons)


async def test_bad_snapshots_are_refused_and_the_batch_writes_nothing(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with pytest.raises(InvalidData, match="not JSON-serialisable"):
        await kit.store.put_many([cp("ok", 1), cp("bad", 1, when=object())])
    assert await kit.store.get("ok") is None  # validated before anything was written
    with pytest.raises(InvalidData, match="exceeds"):
        await kit.store.put_many([cp("big", 1, blob="x" * (10 * 1024 * 1024 + 1))])
    with pytest.raises(InvalidData, match="newer"):
        await kit.store.put_many([attrs.evolve(cp("future", 1), schema=99)])
    with pytest.raises(InvalidData):
        await kit.store.put_many([cp("neg", -1)])
    with pytest.raises(InvalidData):
        await kit.store.put_many([cp("x" * 5000, 1)])
    assert await kit.store.list() == []
    assert "refused" in caplog.text


async def test_unreadable_stored_checkpoints_are_skipped_not_fatal(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    await kit.store.put_many([cp("good", 1)])
    await kit.inject("garbage", b"{not json")
    future = {"room_id": "future", "kind": "pratico", "version": 1, "schema": 2, "state": {}}
    await kit.inject("future", orjson.dumps(future))
    await kit.inject("shapeless", b"[1, 2, 3]")
    await kit.inject("binary", b"\xff\xfe\x00")
    with caplog.at_level(logging.ERROR):
        restored = await kit.store.list()
        assert await kit.store.get("garbage") is None
        assert await kit.store.get("future") is None
    assert [c.room_id for c in restored] == ["good"]
    assert "not valid JSON" in caplog.text
    assert "newer than this build reads" in caplog.text
