"""The checkpointer: coalescing, pacing, batching, retries, forget and flush.

Timing tests run on trio's `autojump_clock` against `MemoryCheckpoints`, a
plain in-process `CheckpointStore` (it validates with the real codec) whose
failures a test can switch on; one test runs the checkpointer on real Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
import trio

from pratico_daemon.metrics import Metrics
from pratico_daemon.services import Services
from pratico_daemon.storage import checkpoint_codec
from pratico_daemon.storage.checkpointer import Checkpointer
from pratico_daemon.storage.protocols import Checkpoint, StorageUnavailable
from pratico_daemon.storage.redis_store import open_redis


class MemoryCheckpoints:
    """A `CheckpointStore` in a dict, recording every call."""

    def __init__(self) -> None:
        self.rooms: dict[str, Checkpoint] = {}
        self.calls: list[tuple[str, list[str]]] = []
        self.fail_next = 0

    async def put_many(self, checkpoints: Sequence[Checkpoint]) -> None:
        await trio.sleep(0.001)  # a write takes time: marks may land during it
        for c in checkpoints:
            checkpoint_codec.encode(c, max_bytes=1 << 20)
        if self.fail_next:
            self.fail_next -= 1
            raise StorageUnavailable("redis: connection refused")
        self.calls.append(("put", [c.room_id for c in checkpoints]))
        for c in checkpoints:
            old = self.rooms.get(c.room_id)
            if old is None or old.version < c.version:
                self.rooms[c.room_id] = c

    async def get(self, room_id: str) -> Checkpoint | None:
        return self.rooms.get(room_id)

    async def delete(self, room_id: str) -> None:
        await trio.sleep(0.001)
        self.calls.append(("delete", [room_id]))
        self.rooms.pop(room_id, None)

    async def list(self, kind: str | None = None) -> list[Checkpoint]:
        return list(self.rooms.values())


class FakeRoom:
    """A room's state and the snapshot callable it hands to `mark_dirty`."""

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self.version = 0
        self.snapshots_taken = 0

    def change(self, checkpointer: Checkpointer) -> None:
        self.version += 1
        checkpointer.mark_dirty(self.room_id, self.snapshot)

    def snapshot(self) -> Checkpoint:
        self.snapshots_taken += 1
        return Checkpoint(self.room_id, "pratico", self.version, {"page": self.version})


@pytest.fixture
async def setup(nursery: trio.Nursery) -> tuple[Checkpointer, MemoryCheckpoints, Metrics]:
    store, metrics = MemoryCheckpoints(), Metrics()
    checkpointer = Checkpointer(store, metrics, interval_s=0.1)
    await nursery.start(checkpointer.run)
    return checkpointer, store, metrics


def puts(store: MemoryCheckpoints) -> list[list[str]]:
    return [rooms for what, rooms in store.calls if what == "put"]


async def test_bursts_coalesce_into_one_write_per_interval(
    autojump_clock: trio.abc.Clock, setup: tuple[Checkpointer, MemoryCheckpoints, Metrics]
) -> None:
    checkpointer, store, metrics = setup
    room = FakeRoom("r1")
    start = trio.current_time()
    for _ in range(1000):  # 1,000 changes over 1 s
        room.change(checkpointer)
        await trio.sleep(0.001)
    elapsed = trio.current_time() - start
    await checkpointer.flush()
    writes = len(puts(store))
    assert writes <= elapsed / checkpointer.interval_s + 2
    assert writes >= 5  # it did write while changes kept coming, not only at the end
    assert room.snapshots_taken == writes  # snapshots are taken only to be written
    assert store.rooms["r1"].version == 1000
    assert metrics.checkpoints_total._value.get() == writes


async def test_many_rooms_go_out_in_bounded_batches(
    autojump_clock: trio.abc.Clock, setup: tuple[Checkpointer, MemoryCheckpoints, Metrics]
) -> None:
    checkpointer, store, _ = setup
    rooms = [FakeRoom(f"r{i}") for i in range(450)]
    for room in rooms:
        room.change(checkpointer)
    await checkpointer.flush()
    batches = puts(store)
    assert [len(b) for b in batches] == [200, 200, 50]
    assert {c.room_id for c in store.rooms.values()} == {r.room_id for r in rooms}


async def test_failed_writes_keep_rooms_dirty_and_retry(
    autojump_clock: trio.abc.Clock, setup: tuple[Checkpointer, MemoryCheckpoints, Metrics]
) -> None:
    checkpointer, store, metrics = setup
    store.fail_next = 3
    room = FakeRoom("r1")
    room.change(checkpointer)
    await trio.sleep(1.0)  # backoff 0.2 s, 0.4 s, 0.8 s…
    assert checkpointer.statistics().failures == 3
    room.change(checkpointer)  # changed again while failing: the newer one is written
    await checkpointer.flush()
    assert store.rooms["r1"].version == 2
    assert metrics.checkpoints_total._value.get() == 1
    assert metrics.checkpoint_lag_seconds._value.get() == 0


async def test_lag_metric_grows_while_the_store_is_down(
    autojump_clock: trio.abc.Clock, setup: tuple[Checkpointer, MemoryCheckpoints, Metrics]
) -> None:
    checkpointer, store, metrics = setup
    store.fail_next = 10**6
    FakeRoom("r1").change(checkpointer)
    await trio.sleep(5)
    assert metrics.checkpoint_lag_seconds._value.get() > 3
    store.fail_next = 0
    await checkpointer.flush()
    assert "r1" in store.rooms


async def test_forget_drops_pending_snapshot_and_deletes(
    autojump_clock: trio.abc.Clock, setup: tuple[Checkpointer, MemoryCheckpoints, Metrics]
) -> None:
    checkpointer, store, _ = setup
    room, other = FakeRoom("gone"), FakeRoom("stays")
    room.change(checkpointer)
    await checkpointer.flush()
    assert "gone" in store.rooms
    room.change(checkpointer)
    other.change(checkpointer)
    checkpointer.forget("gone")
    await checkpointer.flush()
    assert "gone" not in store.rooms
    assert "stays" in store.rooms
    assert ("delete", ["gone"]) in store.calls
    assert room.snapshots_taken == 1  # the change before forget() was never snapshotted


async def test_flush_ignores_the_interval(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    store = MemoryCheckpoints()
    checkpointer = Checkpointer(store, Metrics(), interval_s=3600)
    await nursery.start(checkpointer.run)
    room = FakeRoom("r1")
    room.change(checkpointer)
    await checkpointer.flush()
    room.change(checkpointer)  # the next write would wait an hour
    start = trio.current_time()
    await checkpointer.flush()
    assert trio.current_time() - start < 1
    assert store.rooms["r1"].version == 2


async def test_a_bad_snapshot_does_not_block_the_others(
    autojump_clock: trio.abc.Clock, setup: tuple[Checkpointer, MemoryCheckpoints, Metrics],
    caplog: pytest.LogCaptureFixture,
) -> None:
    checkpointer, store, _ = setup
    good = FakeRoom("good")
    good.change(checkpointer)
    checkpointer.mark_dirty(
        "unserialisable", lambda: Checkpoint("unserialisable", "pratico", 1, {"x": object()})
    )
    checkpointer.mark_dirty("crashes", lambda: 1 / 0)  # type: ignore[arg-type,return-value]
    with caplog.at_level(logging.WARNING):
        await checkpointer.flush()
    assert set(store.rooms) == {"good"}
    assert "dropped" in caplog.text
    assert "snapshot of room crashes failed" in caplog.text


async def test_checkpointer_on_real_redis(aio_loop: object, services: Services) -> None:
    async with open_redis(services.config, services) as stores, trio.open_nursery() as nursery:
        checkpointer = Checkpointer(stores.checkpoints, services.metrics, interval_s=0.05)
        await nursery.start(checkpointer.run)
        rooms = [FakeRoom(f"room-{i}") for i in range(300)]
        for _ in range(5):
            for room in rooms:
                room.change(checkpointer)
            await trio.sleep(0.02)
        with trio.fail_after(10):
            await checkpointer.flush()
        restored = {c.room_id: c.version for c in await stores.checkpoints.list()}
        assert restored == {r.room_id: 5 for r in rooms}
        assert services.metrics.checkpoints_total._value.get() >= 300
        checkpointer.forget("room-0")
        await checkpointer.flush()
        assert await stores.checkpoints.get("room-0") is None
        nursery.cancel_scope.cancel()
