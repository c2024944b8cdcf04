"""The domain-event bus: Redis Streams in production, the SQLite file when embedded.

Entries have the fields of PROTOCOL.md §4: `type`, `id` (unique),
`occurredAt`, `payload` (JSON text). Producers never publish directly: a
change and its event are committed together to the `outbox` table, and the
`OutboxRelay` publishes what is pending, then marks it published.

Exactly once across a crash
---------------------------
The relay can die after the publish and before the mark; it will publish
that batch again. `publish` is therefore idempotent by event id: on Redis a
Lua script appends to the stream only if `bus:published:{id}` does not
exist, then sets it (kept a week), atomically, so a replayed event is a
no-op; on SQLite the entry id is UNIQUE (INSERT OR IGNORE).

Consumers (the `user.events` group) read with `read_group` and `ack` what
they handled; unacknowledged entries are handed out again after a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import attrs
import orjson
import trio

from pratico_daemon import logs
from pratico_daemon.backoff import Backoff
from pratico_daemon.conversation.db import SqliteDatabase, Tx
from pratico_daemon.conversation.repo import ConversationRepo, OutboxEvent
from pratico_daemon.storage.protocols import StorageUnavailable

log = logs.get("conversation.bus")

# How long a published id is remembered for deduplication: far longer than
# any outage the relay could be replaying after.
DEDUPE_TTL_S = 7 * 24 * 3600


@attrs.frozen
class Delivery:
    """One entry handed to a consumer group: `delivery_id` is what `ack` takes."""

    delivery_id: str
    fields: dict[str, str]

    @property
    def type(self) -> str:
        return self.fields.get("type", "")

    def payload(self) -> Any:
        try:
            return orjson.loads(self.fields.get("payload", "{}"))
        except orjson.JSONDecodeError:
            return None


class Bus(Protocol):
    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        """Append each event to its topic, at most once per event id (idempotent)."""
        ...

    async def append(self, topic: str, fields: dict[str, str]) -> None:
        """Append a raw entry (tests and tools; other services produce `user.events`)."""
        ...

    async def entries(self, topic: str) -> list[dict[str, str]]:
        """Every entry of a topic, oldest first (tests and operators)."""
        ...

    async def read_group(self, topic: str, group: str, consumer: str,
                         count: int = 50) -> list[Delivery]:
        """New or never-acknowledged entries for `group`; returns at once (no blocking)."""
        ...

    async def ack(self, topic: str, group: str, delivery_ids: Sequence[str]) -> None: ...


# -- embedded -----------------------------------------------------------------------------


class SqliteBus:
    """Streams as rows of `bus_entries`; a group's position is its last acknowledged seq."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    def __repr__(self) -> str:
        return f"<SqliteBus {self.db.path}>"

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        async def unit(tx: Tx) -> None:
            for event in events:
                f = event.fields()
                await tx.execute(
                    "INSERT INTO bus_entries (stream, id, type, occurred_at, payload) "
                    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                    event.topic, f["id"], f["type"], f["occurredAt"], f["payload"])

        await self.db.transaction(unit)

    async def append(self, topic: str, fields: dict[str, str]) -> None:
        async def unit(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO bus_entries (stream, id, type, occurred_at, payload) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                topic, fields["id"], fields.get("type", ""), fields.get("occurredAt", ""),
                fields.get("payload", "{}"))

        await self.db.transaction(unit)

    async def entries(self, topic: str) -> list[dict[str, str]]:
        async def unit(tx: Tx) -> list[dict[str, str]]:
            rows = await tx.fetch(
                "SELECT id, type, occurred_at, payload FROM bus_entries WHERE stream = $1 "
                "ORDER BY seq", topic)
            return [{"id": r["id"], "type": r["type"], "occurredAt": r["occurred_at"],
                     "payload": r["payload"]} for r in rows]

        return await self.db.transaction(unit)

    async def read_group(self, topic: str, group: str, consumer: str,
                         count: int = 50) -> list[Delivery]:
        async def unit(tx: Tx) -> list[Delivery]:
            pos = await tx.fetchrow(
                "SELECT last_seq FROM bus_offsets WHERE stream = $1 AND group_name = $2",
                topic, group)
            rows = await tx.fetch(
                "SELECT seq, id, type, occurred_at, payload FROM bus_entries "
                "WHERE stream = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                topic, pos["last_seq"] if pos else 0, count)
            return [Delivery(str(r["seq"]), {"id": r["id"], "type": r["type"],
                                             "occurredAt": r["occurred_at"],
                                             "payload": r["payload"]}) for r in rows]

        return await self.db.transaction(unit)

    async def ack(self, topic: str, group: str, delivery_ids: Sequence[str]) -> None:
        if not delivery_ids:
            return
        last = max(int(d) for d in delivery_ids)

        async def unit(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO bus_offsets (stream, group_name, last_seq) VALUES ($1, $2, $3) "
                "ON CONFLICT (stream, group_name) DO UPDATE SET last_seq = "
                "max(bus_offsets.last_seq, excluded.last_seq)", topic, group, last)

        await self.db.transaction(unit)


# -- Redis Streams ------------------------------------------------------------------------

# Claim after the append: a script is not rolled back when a command fails, so
# claiming first would leave a claim without its entry (an event lost for good)
# if XADD were refused. Scripts run atomically, so nothing comes in between.
_PUBLISH_ONCE = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return false
end
local entry = redis.call('XADD', KEYS[1], '*', 'type', ARGV[2], 'id', ARGV[1],
                         'occurredAt', ARGV[3], 'payload', ARGV[4])
redis.call('SET', KEYS[2], '1', 'EX', ARGV[5])
return entry
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBus:
    """Streams on Redis through a `redis.asyncio` client living in the daemon's aio loop.

    Each method is one bridge crossing (a pipeline), which is fine here: domain
    events are a few per session, not a hot path.
    """

    def __init__(self, client: Any, key_prefix: str = "", loop: Any = None) -> None:
        self.client = client
        self.prefix = key_prefix
        # Addressed explicitly (like storage.postgres): callers may run in tasks
        # spawned outside the `open_loop()` block, where no loop is in context.
        self.loop = loop
        self._groups: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"<RedisBus prefix={self.prefix!r}>"

    @classmethod
    async def open(cls, url: str, key_prefix: str = "") -> RedisBus:
        """Connect (inside an `aio.open_loop()`); close with `aclose()`."""
        import redis.asyncio as aredis
        import trio_asyncio

        loop = trio_asyncio.current_loop.get()
        if loop is None:
            raise RuntimeError("RedisBus.open needs a running aio.open_loop()")
        client = aredis.Redis.from_url(url, socket_timeout=None)
        return cls(client, key_prefix, loop)

    async def aclose(self) -> None:
        with trio.move_on_after(5):
            await self.loop.run_aio_coroutine(self.client.aclose())

    async def _call(self, fn: Any, *args: Any) -> Any:
        import redis.exceptions

        try:
            with trio.fail_after(10):
                return await self.loop.run_aio_coroutine(fn(*args))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError,
                trio.TooSlowError) as exc:
            raise StorageUnavailable(f"redis unavailable: {exc}") from exc

    def stream(self, topic: str) -> str:
        return self.prefix + topic

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        if not events:
            return
        prefix = self.prefix

        async def run() -> None:
            script = self.client.register_script(_PUBLISH_ONCE)
            pipe = self.client.pipeline(transaction=False)
            for event in events:
                f = event.fields()
                await script(keys=[prefix + event.topic, f"{prefix}bus:published:{event.id}"],
                             args=[f["id"], f["type"], f["occurredAt"], f["payload"],
                                   DEDUPE_TTL_S], client=pipe)
            await pipe.execute()

        await self._call(run)

    async def append(self, topic: str, fields: dict[str, str]) -> None:
        await self._call(self.client.xadd, self.stream(topic), fields)

    async def entries(self, topic: str) -> list[dict[str, str]]:
        rows = await self._call(self.client.xrange, self.stream(topic))
        return [{_text(k): _text(v) for k, v in fields.items()} for _, fields in rows]

    async def _ensure_group(self, stream: str, group: str) -> None:
        import redis.exceptions

        if (stream, group) in self._groups:
            return
        try:
            await self._call(self.client.xgroup_create, stream, group, "0", True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add((stream, group))

    async def read_group(self, topic: str, group: str, consumer: str,
                         count: int = 50) -> list[Delivery]:
        stream = self.stream(topic)
        await self._ensure_group(stream, group)
        # Our own unacknowledged entries first (a crash mid-handling), then new ones.
        out = []
        for start in ("0", ">"):
            reply = await self._call(self.client.xreadgroup, group, consumer,
                                     {stream: start}, count)
            for _, items in reply or []:
                for entry_id, fields in items:
                    if fields:
                        out.append(Delivery(_text(entry_id),
                                            {_text(k): _text(v) for k, v in fields.items()}))
            if out:
                break
        return out

    async def ack(self, topic: str, group: str, delivery_ids: Sequence[str]) -> None:
        if delivery_ids:
            await self._call(self.client.xack, self.stream(topic), group, *delivery_ids)


# -- the relay ----------------------------------------------------------------------------


@attrs.define
class OutboxRelay:
    """Publishes committed outbox rows to the bus, in order, until cancelled.

    Woken by `poke()` after each commit that wrote events, and every
    `idle_s` in case a poke was missed (e.g. events written by another node).
    """

    repo: ConversationRepo
    bus: Bus
    clock: Any
    idle_s: float = 30.0
    batch: int = 100
    published: int = 0
    # Test hook: awaited between the publish and the mark (to kill the relay there).
    after_publish: Any = None
    _wake: trio.Event = attrs.Factory(trio.Event)

    def poke(self) -> None:
        self._wake.set()

    async def publish_pending(self) -> int:
        events = await self.repo.pending_events(self.batch)
        if not events:
            return 0
        await self.bus.publish(events)
        if self.after_publish is not None:
            await self.after_publish(events)
        await self.repo.mark_published([e.id for e in events], self.clock.now())
        self.published += len(events)
        return len(events)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        backoff = Backoff(0.5, 30.0)
        while True:
            self._wake = trio.Event()
            try:
                sent = await self.publish_pending()
                backoff.reset()
            except StorageUnavailable as exc:
                log.warning("outbox relay: %s (retry in %.1fs)", exc, backoff.delay)
                await backoff.wait()
                continue
            except Exception:
                log.exception("outbox relay failed (retry in %.1fs)", backoff.delay)
                await backoff.wait()
                continue
            if sent >= self.batch:
                continue
            with trio.move_on_after(self.idle_s):
                await self._wake.wait()
