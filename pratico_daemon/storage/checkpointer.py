"""The checkpointer: one task per daemon writes rooms' snapshots, coalesced and batched.

A room calls `mark_dirty(room_id, snapshot)` after each state change; that is a
plain, non-blocking call, so the room's inbox loop never waits on storage. The
task calls `snapshot()` when it writes (so a burst of 50 changes costs one
snapshot and one write), at most once per `interval_s` per room
(`redis.checkpoint_interval_s`, 0.1 s: DESIGN.md's "at most 100 ms of changes
lost"), and sends every due room of the moment in one `put_many` (one
pipeline or one SQLite transaction per `max_batch` rooms).

- A failed write leaves the rooms dirty; they are retried with a backoff
  (capped at 1 s) and `checkpoint_lag_seconds` grows, which is the alert.
- A snapshot refused as `InvalidData` is retried alone to find the culprit;
  the culprit is logged and dropped (retrying cannot fix it), the others are
  written.
- `forget(room_id)`: the room ended; its pending snapshot is dropped and its
  checkpoint deleted (before any later snapshot of the same id is written).
- `flush()`: the drain; returns once every change marked before the call is
  written (or the caller's deadline cancels it).

`snapshot` runs in the checkpointer's task: it must be a quick, pure read of
the room's state (rooms own their state and change it only in their inbox
task, which cannot run while this synchronous call does).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import attrs
import trio

from pratico_daemon import logs
from pratico_daemon.metrics import Metrics
from pratico_daemon.storage.protocols import (
    Checkpoint,
    CheckpointStore,
    InvalidData,
    StorageError,
)

log = logs.get("storage.checkpointer")


@attrs.define
class _Dirty:
    snapshot: Callable[[], Checkpoint]
    since: float  # trio time of the oldest change not yet written
    seq: int  # mark sequence number of that change (flush waits on it)


@attrs.frozen
class CheckpointerStatistics:
    dirty: int
    pending_deletes: int
    written: int
    failures: int


class Checkpointer:
    def __init__(
        self, store: CheckpointStore, metrics: Metrics, *, interval_s: float = 0.1,
        max_batch: int = 200,
    ) -> None:
        # max_batch: 200 snapshots of a few KB make a pipeline of ~1 MB, which
        # Redis applies in about a millisecond; larger batches only add latency.
        self._store = store
        self._metrics = metrics
        self.interval_s = interval_s
        self._max_batch = max_batch
        self._dirty: dict[str, _Dirty] = {}
        self._deletes: dict[str, int] = {}  # room id -> mark seq of the forget
        self._writing: dict[str, _Dirty] = {}  # taken out of _dirty, being written
        self._last_write: dict[str, float] = {}
        self._seq = itertools.count(1)
        self._last_seq = 0
        self._wakeup = trio.Event()
        self._progress = trio.Event()
        self._urgent = 0  # flush() callers waiting: ignore the interval
        self._written = 0
        self._failures = 0

    def __repr__(self) -> str:
        return f"<Checkpointer {len(self._dirty)} dirty, {self._written} written>"

    def statistics(self) -> CheckpointerStatistics:
        return CheckpointerStatistics(
            len(self._dirty), len(self._deletes), self._written, self._failures
        )

    # ---- what rooms call ------------------------------------------------------

    def mark_dirty(self, room_id: str, snapshot: Callable[[], Checkpoint]) -> None:
        """The room changed; `snapshot()` will be called when it is written."""
        self._last_seq = seq = next(self._seq)
        entry = self._dirty.get(room_id)
        if entry is None:
            self._dirty[room_id] = _Dirty(snapshot, trio.current_time(), seq)
            self._wakeup.set()  # a newly dirty room may be due before the task's next wakeup
        else:
            entry.snapshot = snapshot  # coalesced: one write carries both changes

    def forget(self, room_id: str) -> None:
        """The room ended: drop its pending snapshot and delete its checkpoint."""
        self._last_seq = seq = next(self._seq)
        self._dirty.pop(room_id, None)
        self._last_write.pop(room_id, None)
        self._deletes[room_id] = seq
        self._wakeup.set()

    async def flush(self) -> None:
        """Wait until every change marked so far is written (ignoring the interval)."""
        target = self._last_seq
        self._urgent += 1
        self._wakeup.set()
        try:
            while self._oldest_seq() <= target:
                await self._progress.wait()
        finally:
            self._urgent -= 1

    def _oldest_seq(self) -> float:
        seqs = [d.seq for d in self._dirty.values()] + list(self._deletes.values())
        seqs += [d.seq for d in self._writing.values()]
        return min(seqs, default=float("inf"))

    # ---- the task -------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Write due snapshots forever; run it in the daemon's nursery."""
        task_status.started()
        failures = 0
        while True:
            self._wakeup = trio.Event()
            ok = await self._write_deletes() and await self._write_due()
            self._update_lag()
            self._signal_progress()
            if not ok:
                failures += 1
                self._failures += 1
                await trio.sleep(min(self.interval_s * 2**failures, 1.0))
                continue
            failures = 0
            next_due = self._next_due()
            if next_due is None or next_due > trio.current_time():
                with trio.move_on_at(next_due if next_due is not None else float("inf")):
                    await self._wakeup.wait()

    def _signal_progress(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    def _update_lag(self) -> None:
        oldest = min((d.since for d in self._dirty.values()), default=None)
        lag = 0.0 if oldest is None else trio.current_time() - oldest
        self._metrics.checkpoint_lag_seconds.set(lag)

    def _due_at(self, room_id: str) -> float:
        if self._urgent:
            return float("-inf")
        return self._last_write.get(room_id, float("-inf")) + self.interval_s

    def _next_due(self) -> float | None:
        return min((self._due_at(r) for r in self._dirty), default=None)

    async def _write_deletes(self) -> bool:
        """Delete ended rooms' checkpoints, concurrently (the bridge batches them)."""
        failed: list[str] = []

        async def delete(room_id: str, seq: int) -> None:
            try:
                await self._store.delete(room_id)
            except StorageError as exc:
                log.warning("checkpoint of room %s not deleted yet: %s", room_id, exc,
                            extra={"room": room_id})
                failed.append(room_id)
                return
            if self._deletes.get(room_id) == seq:  # not forgotten again meanwhile
                del self._deletes[room_id]

        pending = list(self._deletes.items())
        for start in range(0, len(pending), self._max_batch):
            async with trio.open_nursery() as nursery:
                for room_id, seq in pending[start : start + self._max_batch]:
                    nursery.start_soon(delete, room_id, seq)
        return not failed

    async def _write_due(self) -> bool:
        now = trio.current_time()
        due = [r for r in self._dirty if self._due_at(r) <= now][: self._max_batch]
        if not due:
            return True
        taken = self._writing = {r: self._dirty.pop(r) for r in due}
        try:
            return await self._write_taken(taken)
        finally:
            self._writing = {}

    async def _write_taken(self, taken: dict[str, _Dirty]) -> bool:
        snapshots: dict[str, Checkpoint] = {}
        for room_id, entry in taken.items():
            try:
                snapshots[room_id] = entry.snapshot()
            except Exception:
                log.exception("snapshot of room %s failed; not checkpointed",
                              room_id, extra={"room": room_id})
        try:
            await self._store.put_many(list(snapshots.values()))
        except InvalidData:
            await self._write_one_by_one(snapshots, taken)
        except StorageError as exc:
            log.warning("checkpoint write of %d rooms failed: %s", len(snapshots), exc)
            self._restore(taken)
            return False
        else:
            self._written_now(snapshots)
        return True

    async def _write_one_by_one(
        self, snapshots: dict[str, Checkpoint], taken: dict[str, _Dirty]
    ) -> None:
        for room_id, cp in snapshots.items():
            try:
                await self._store.put_many([cp])
            except InvalidData as exc:
                log.error("checkpoint of room %s dropped: %s", room_id, exc,
                          extra={"room": room_id})
            except StorageError:
                self._restore({room_id: taken[room_id]})
            else:
                self._written_now({room_id: cp})

    def _restore(self, taken: dict[str, _Dirty]) -> None:
        """Put rooms back as dirty after a failed write, keeping their oldest change."""
        for room_id, entry in taken.items():
            newer = self._dirty.get(room_id)
            if newer is not None:  # marked again meanwhile: newer snapshot, older change
                newer.since, newer.seq = entry.since, entry.seq
            elif room_id not in self._deletes:
                self._dirty[room_id] = entry

    def _written_now(self, snapshots: dict[str, Checkpoint]) -> None:
        now = trio.current_time()
        for room_id in snapshots:
            if room_id not in self._deletes:
                self._last_write[room_id] = now
        self._written += len(snapshots)
        self._metrics.checkpoints_total.inc(len(snapshots))
