"""The batching bridge: trio callers, one asyncio-side Redis worker, one pipeline per batch.

Why: a trio→asyncio crossing costs ~100 µs (STACK-NOTES.md), more than a Redis
command. So callers never cross. They append a request to a bounded queue and
wait on a trio event; one long-lived asyncio coroutine (entered once, with one
crossing, for the store's lifetime) takes everything queued, sends it as ONE
`MULTI … EXEC` pipeline, and hands each caller its own slice of the replies.
The wire is our own `RespConnection` (resp.py): redis-py's pipeline cost
~18 µs of CPU per command in batches of 15, this ~7 (bench/redis_bench.py).
Callers pack their commands themselves (on the trio side, before queueing),
so an argument Redis cannot carry is that caller's `InvalidData` at once.

Theory of operation
-------------------
- **Bounded**: `capacity` callers may be queued or in flight; the next one
  waits for a slot (backpressure, not memory growth).
- **Atomic batches**: the pipeline is a transaction. Redis applies all of it
  or none of it, so a batch cut off midway (connection lost, worker cancelled
  at shutdown) is never half visible to anyone. An `Op`'s commands are
  therefore applied together (`HSET` + `PEXPIRE`, a whole `put_many`).
- **Caller cancellation**: a request whose caller left while it was queued is
  dropped before the batch is built, so it never reaches Redis; one that left
  while in flight is applied with the rest of its batch (Redis cannot take it
  back) but its result goes nowhere: the caller has already raised
  `Cancelled`. Either way the worker never waits on a caller.
- **Failures**: a lost connection or a batch that takes longer than
  `timeout_s` fails every caller of that batch with `StorageUnavailable`
  (the batch may or may not have been applied; writes here are idempotent or
  versioned). The worker stays alive: while Redis is down it fails new
  requests at once and retries the connection with a capped backoff, so
  callers hear "unavailable" promptly instead of hanging. Callers also wait
  under a trio-side deadline (a sweeper task fails overdue requests, queued
  or in flight), because redis-py runs with `socket_timeout=None`
  (STACK-NOTES.md: its default timeout costs 1.7×).
- A Redis error reply to one command (WRONGTYPE) is that caller's
  `InvalidData`; the batch's other callers get their replies. A command
  Redis refuses before running anything (unknown, wrong arity) aborts the
  whole transaction: the batch is then retried one request at a time.
- Replies are RESP2 as hiredis parses them (resp.py): `parse` functions see
  bytes, ints, None and flat lists, not redis-py's converted values.
"""

from __future__ import annotations

import asyncio
import collections
import copy
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import attrs
import hiredis
import outcome
import trio

from pratico_daemon import logs
from pratico_daemon.storage.aio import aio_as_trio
from pratico_daemon.storage.protocols import InvalidData, StorageUnavailable
from pratico_daemon.storage.resp import EncodingError, ReplyError, RespConnection, pack

log = logs.get("storage.bridge")

T = TypeVar("T")

# Errors that mean "the connection or the server is gone", as opposed to a reply.
_DOWN_ERRORS = (
    OSError,  # ConnectionError among them
    TimeoutError,  # asyncio.TimeoutError too, since 3.11
    EOFError,
    hiredis.ProtocolError,
)

_MULTI = pack([("MULTI",)])
_EXEC = pack([("EXEC",)])


class _Aborted(Exception):
    """Redis refused the whole transaction (EXECABORT): some command was refused queued."""


@attrs.frozen
class Op(Generic[T]):
    """One caller's request: Redis commands applied together, replies parsed into T.

    `parse` receives exactly one reply per command (redis-py's response
    callbacks applied) and runs on the worker, so it must be quick and pure.
    """

    commands: tuple[tuple[Any, ...], ...]
    parse: Callable[[list[Any]], T]
    # Bytes of payload, when large (snapshots): batches stop growing past
    # `max_batch_bytes`. Small commands leave it 0 and are not measured.
    size: int = 0


@attrs.frozen
class BridgeStatistics:
    queued: int
    in_flight: int
    batches: int
    requests: int
    dropped_cancelled: int
    up: bool


class _Request:
    __slots__ = ("abandoned", "deadline", "done", "op", "payload", "result")

    def __init__(self, op: Op[Any], payload: bytes, deadline: float) -> None:
        self.op = op
        self.payload = payload
        self.deadline = deadline
        self.done = trio.Event()
        self.result: outcome.Outcome[Any] | None = None
        self.abandoned = False

    def settle(self, result: outcome.Outcome[Any]) -> None:
        if self.result is None:
            self.result = result
            self.done.set()


class RedisBridge:
    """Runs `Op`s from many trio tasks as pipelined transactions on one connection."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "pratico-bridge",
        capacity: int = 10_000,
        max_batch: int = 512,
        max_batch_bytes: int = 32 * 1024 * 1024,
        timeout_s: float = 5.0,
        on_health: Callable[[bool, str], None] = lambda ok, detail: None,
    ) -> None:
        # capacity: 10k outstanding requests ≈ a few MB of commands, far above
        # what 2,000 clients joining at once produce; max_batch keeps one
        # pipeline's reply parsing (~5 µs/command) under ~3 ms of loop time;
        # max_batch_bytes keeps a burst of large snapshots from becoming one
        # multi-hundred-MB transaction that blocks Redis for everyone.
        self._url = url
        self._name = name  # CLIENT SETNAME: what an operator sees in CLIENT LIST
        self._conn: RespConnection | None = None  # opened by the worker, on first use
        self._slots = trio.Semaphore(capacity)
        self._queue: collections.deque[_Request] = collections.deque()
        self._in_flight: list[_Request] = []
        self._wakeup = asyncio.Event()  # binds to the running loop on first wait
        self._max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self.timeout_s = timeout_s
        self._on_health = on_health
        self._closed = False
        self._up = True
        self._failures = 0
        self._retry_at = 0.0
        self._batches = 0
        self._requests = 0
        self._dropped = 0

    def __repr__(self) -> str:
        state = "UP" if self._up else "DOWN"
        return f"<RedisBridge {state} queued={len(self._queue)} batches={self._batches}>"

    def statistics(self) -> BridgeStatistics:
        return BridgeStatistics(
            len(self._queue), len(self._in_flight), self._batches, self._requests,
            self._dropped, self._up,
        )

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The worker; run it in the store's nursery. Cancel it to stop."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._expire_overdue)
                task_status.started()
                await aio_as_trio(self._worker)()
        finally:
            self._closed = True
            gone = outcome.Error(StorageUnavailable("redis store closed"))
            for req in [*self._in_flight, *self._queue]:
                req.settle(gone)
            self._queue.clear()
            self._disconnect()

    async def call(self, op: Op[T]) -> T:
        """Queue `op`, wait for its own result (or error) under a trio-side deadline."""
        if self._closed:
            raise StorageUnavailable("redis store closed")
        try:
            payload = pack(op.commands)
        except EncodingError as exc:
            raise InvalidData(str(exc)) from None
        # Hot path, so no extra scheduler round trip: take a free slot without
        # yielding (waiting for `done` below is this call's checkpoint). The
        # deadline is enforced by `_expire_overdue`, not a CancelScope per call
        # (a deadline scope costs as much as the rest of the call).
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            await self._slots.acquire()
        req = _Request(op, payload, trio.current_time() + self.timeout_s)
        try:
            self._queue.append(req)
            self._wakeup.set()
            await req.done.wait()
        except BaseException:
            req.abandoned = True
            raise
        finally:
            self._slots.release()
        result = req.result
        assert result is not None
        if isinstance(result, outcome.Error):
            # One failure may settle a whole batch (redis down, store closed): each
            # caller raises its own copy, since an Outcome unwraps only once.
            raise copy.copy(result.error)
        return result.unwrap()  # type: ignore[no-any-return]

    async def _expire_overdue(self) -> None:
        """Fail requests past their deadline, queued or in flight (trio-side timeout).

        Checked every `timeout_s / 10` (50 ms at most): a caller hears
        `StorageUnavailable` at most that long after its deadline, even when
        the worker itself is stuck.
        """
        interval = min(0.05, self.timeout_s / 10)
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            late = outcome.Error(
                StorageUnavailable(f"redis did not answer within {self.timeout_s:g}s")
            )
            for req in self._in_flight:
                if req.deadline <= now:
                    req.settle(late)
            for req in self._queue:
                if req.deadline > now:
                    break  # queued in deadline order: the rest are younger
                req.abandoned = True
                req.settle(late)

    async def call_many(self, ops: Sequence[Op[Any]]) -> list[Any]:
        """Several ops in one request (one slot, same batch): results in order."""
        counts = [len(op.commands) for op in ops]

        def parse(replies: list[Any]) -> list[Any]:
            out, start = [], 0
            for op, n in zip(ops, counts, strict=True):
                out.append(op.parse(replies[start : start + n]))
                start += n
            return out

        commands = tuple(c for op in ops for c in op.commands)
        return await self.call(Op(commands, parse))

    # ---- asyncio side -------------------------------------------------------

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch: list[_Request] = []
            size = 0
            while self._queue and len(batch) < self._max_batch:
                req = self._queue[0]
                if batch and size + req.op.size > self._max_batch_bytes:
                    break
                self._queue.popleft()
                if req.abandoned:
                    self._dropped += 1
                else:
                    batch.append(req)
                    size += req.op.size
            if not batch:
                continue
            if not self._up and loop.time() < self._retry_at:
                # Down and not yet time to retry: answer at once, don't queue up.
                fail = outcome.Error(StorageUnavailable("redis unavailable"))
                for req in batch:
                    req.settle(fail)
                continue
            # Left set if the worker is cancelled mid-batch: `run` then fails these callers.
            self._in_flight = batch
            await self._run_batch(batch, loop)
            self._in_flight = []

    async def _run_batch(self, batch: list[_Request], loop: asyncio.AbstractEventLoop) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                replies = await self._execute(batch)
        except _DOWN_ERRORS as exc:
            self._mark_down(exc, loop)
            fail = outcome.Error(StorageUnavailable(f"redis: {exc or type(exc).__name__}"))
            for req in batch:
                req.settle(fail)
            return
        except _Aborted as exc:
            # Some command was refused before anything ran: find whose op it was.
            if len(batch) == 1:
                batch[0].settle(outcome.Error(InvalidData(f"redis refused: {exc}")))
            else:
                for req in batch:
                    await self._run_batch([req], loop)
            return
        except Exception as exc:  # a bug: its callers see it, the worker carries on
            log.exception("redis batch failed unexpectedly")
            for req in batch:
                req.settle(outcome.Error(exc))
            return
        self._mark_up()
        self._batches += 1
        self._requests += len(batch)
        start = 0
        for req in batch:
            n = len(req.op.commands)
            req.settle(_resolve(req.op, replies[start : start + n]))
            start += n

    async def _execute(self, batch: list[_Request]) -> list[Any]:
        """`MULTI`, every request's commands, `EXEC`: the `EXEC` reply, one per command."""
        try:
            if self._conn is None:
                self._conn = await RespConnection.open(self._url, name=self._name)
            count = sum(len(req.op.commands) for req in batch)
            replies = await self._conn.request(
                b"".join([_MULTI, *(req.payload for req in batch), _EXEC]), count + 2)
        except BaseException:
            # Cut off mid-request (error, timeout, cancellation): where the stream
            # stands is unknown, so the next batch starts on a new connection.
            self._disconnect()
            raise
        result = replies[-1]
        if isinstance(result, ReplyError):
            raise _Aborted(str(result))
        if not isinstance(result, list) or len(result) != count:
            self._disconnect()
            raise EOFError(f"unexpected EXEC reply {result!r:.80}")
        return result

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _mark_down(self, exc: BaseException, loop: asyncio.AbstractEventLoop) -> None:
        self._failures += 1
        self._retry_at = loop.time() + min(0.05 * 2 ** min(self._failures, 5), 1.0)
        if self._up:
            self._up = False
            log.warning("redis unavailable: %s", exc or type(exc).__name__)
            self._on_health(False, f"redis commands failing: {exc or type(exc).__name__}")

    def _mark_up(self) -> None:
        self._failures = 0
        if not self._up:
            self._up = True
            log.info("redis answers again")
            self._on_health(True, "")


def _resolve(op: Op[T], replies: list[Any]) -> outcome.Outcome[T]:
    for reply in replies:
        if isinstance(reply, Exception):
            return outcome.Error(InvalidData(f"redis refused: {reply}"))
    try:
        return outcome.Value(op.parse(replies))
    except Exception as exc:  # a parse bug must reach its caller, not kill the worker
        return outcome.Error(exc)
