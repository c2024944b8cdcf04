"""GroupCommitWriter on its own: batching and cancellation, with a commit the test holds.

The commit function here is the writer's own seam (what Postgres and SQLite
plug into), not a stand-in for a database: the tests need to hold a batch
"in flight" at an exact moment, which a real database does not allow.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from pratico_daemon.metrics import Metrics
from pratico_daemon.storage.event_writer import GroupCommitWriter, Pending
from pratico_daemon.storage.protocols import (
    InvalidData,
    RoomEvent,
    StorageError,
    StorageUnavailable,
)


class HeldCommit:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = trio.Event()
        self.entered = trio.Event()
        self.fail: BaseException | None = None

    async def __call__(self, batch: Sequence[Pending]) -> None:
        self.entered.set()
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        self.batches.append([p.event.type for p in batch])


async def test_appends_queued_during_a_commit_form_the_next_batch(nursery: trio.Nursery) -> None:
    commit = HeldCommit()
    metrics = Metrics()
    writer = GroupCommitWriter(commit, metrics=metrics)
    await nursery.start(writer.run)
    async with trio.open_nursery() as callers:
        callers.start_soon(writer.append_durable, RoomEvent("r", "first"))
        await commit.entered.wait()
        for n in range(10):
            callers.start_soon(writer.append_durable, RoomEvent("r", f"e{n}"))
        await trio.testing.wait_all_tasks_blocked()
        commit.release.set()
    assert commit.batches[0] == ["first"]
    assert sorted(commit.batches[1]) == sorted(f"e{n}" for n in range(10))
    assert len(commit.batches) == 2
    assert b"pratico_event_batch_size_count 2.0" in metrics.render()


async def test_cancelled_while_queued_is_dropped_and_never_acked(nursery: trio.Nursery) -> None:
    commit = HeldCommit()
    writer = GroupCommitWriter(commit)
    await nursery.start(writer.run)
    acked: list[str] = []

    async def append(name: str) -> None:
        await writer.append_durable(RoomEvent("r", name))
        acked.append(name)

    async with trio.open_nursery() as callers:
        callers.start_soon(append, "in-flight")
        await commit.entered.wait()  # batch 1 is held in its commit
        callers.start_soon(append, "kept")
        async with trio.open_nursery() as doomed:
            doomed.start_soon(append, "abandoned")
            await trio.testing.wait_all_tasks_blocked()  # queued behind batch 1
            doomed.cancel_scope.cancel()
        commit.release.set()
    assert sorted(acked) == ["in-flight", "kept"]
    assert commit.batches == [["in-flight"], ["kept"]]  # "abandoned" never reached a commit
    # The writer keeps working afterwards.
    await writer.append_durable(RoomEvent("r", "later"))
    assert commit.batches[-1] == ["later"]
    await writer.flush()


async def test_outage_error_reaches_every_caller_of_the_batch(nursery: trio.Nursery) -> None:
    commit = HeldCommit()
    commit.fail = StorageUnavailable("no database, no journal")
    commit.release.set()
    writer = GroupCommitWriter(commit)
    await nursery.start(writer.run)
    with pytest.raises(StorageUnavailable):
        await writer.append_durable(RoomEvent("r", "lost"))


async def test_refused_event_is_isolated_from_its_batch(nursery: trio.Nursery) -> None:
    committed: list[str] = []

    async def picky(batch: Sequence[Pending]) -> None:
        if any(p.event.type == "poison" for p in batch):
            raise InvalidData("the database refused it")
        committed.extend(p.event.type for p in batch)

    writer = GroupCommitWriter(picky)
    await nursery.start(writer.run)
    results: dict[str, str] = {}

    async def append(name: str) -> None:
        try:
            await writer.append_durable(RoomEvent("r", name))
            results[name] = "ok"
        except InvalidData:
            results[name] = "refused"

    async with trio.open_nursery() as callers:
        for name in ("a", "poison", "b"):
            callers.start_soon(append, name)
    assert results == {"a": "ok", "poison": "refused", "b": "ok"}
    assert sorted(committed) == ["a", "b"]


async def test_a_bug_in_a_commit_fails_its_batch_but_not_the_writer(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    async def buggy_once(batch: Sequence[Pending]) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise KeyError("oops")

    writer = GroupCommitWriter(buggy_once)
    await nursery.start(writer.run)
    with pytest.raises(StorageError, match="KeyError"):
        await writer.append_durable(RoomEvent("r", "first"))
    await writer.append_durable(RoomEvent("r", "second"))
    assert calls == [1, 1]
    assert "event batch of 1 failed" in caplog.text


async def test_a_commit_that_never_yields_still_wakes_appenders_queued_through_a_full_channel():
    # With room for one event, appenders wait in the channel's `send`, and a
    # commit that never yields completes events as fast as the writer takes
    # them: every appender must still be woken exactly once and return.
    committed: list[str] = []

    async def instant_commit(batch: Sequence[Pending]) -> None:
        committed.extend(p.event.type for p in batch)

    writer = GroupCommitWriter(instant_commit, queue_size=1, max_batch=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with trio.fail_after(5):
            async with trio.open_nursery() as appenders:
                for n in range(50):
                    appenders.start_soon(writer.append_durable, RoomEvent("r", f"e{n}"))
        nursery.cancel_scope.cancel()
    assert sorted(committed) == sorted(f"e{n}" for n in range(50))
