"""Checkpoints, presence keys and expiry notifications on Redis (redis-py asyncio, bridged).

`open_redis(config, services)` runs inside an `aio.open_loop()` the caller
opened and yields `RedisStores`: `.checkpoints`, `.presence`, `.expirations`.
Every command goes through one `RedisBridge` (batched, one pipeline per
batch); the keyspace subscription has its own connection.

Keys
----
Presence keys are named by the callers exactly as the seed documents name them
(`alive:org_{org}_user_{user}`, `{user_id}`, `lesson_seat_{lesson_id}`, …);
this module only prepends `redis.key_prefix`. Checkpoints live in hashes
`{prefix}pratico:checkpoint:{room_id}` (fields `v` version, `d` document)
indexed by the set `{prefix}pratico:checkpoints`, which `list()` reads at
start. A Lua script compares versions inside Redis, so an older snapshot never
overwrites a newer one, even from another node. (Two keys per script: on Redis
Cluster the prefix would need a hash tag; we run on one Redis.)

Expiry notifications
--------------------
At start (and after each reconnection, since Redis forgets it on restart) the
daemon adds `Ex` to `notify-keyspace-events`, keeping any flags an operator
set. Where `CONFIG` is refused (managed Redis), a probe key with a 100 ms TTL
tells whether the server sends expiry events anyway; `/readyz` shows
`redis_notifications` not ok when it does not. The subscription connection is
named (`CLIENT SETNAME`, see `KeyspaceSubscription.name`), reads with a
timeout and PINGs when idle: a killed or silently dead connection is noticed
within about three `health_interval_s` (a PING when idle, two intervals for
its PONG), re-established with backoff, counted in
`pratico_subscription_restarts_total`, reported under `redis` in `/readyz`,
and followed by a RESYNC on the expirations channel (see expirations.py).
"""

from __future__ import annotations

import asyncio
import math
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import redis.asyncio as aredis
import redis.exceptions
import trio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from pratico_daemon import logs
from pratico_daemon.config import Config
from pratico_daemon.services import Services
from pratico_daemon.storage import checkpoint_codec
from pratico_daemon.storage.aio import aio_as_trio
from pratico_daemon.storage.background import background_tasks
from pratico_daemon.storage.bridge import Op, RedisBridge
from pratico_daemon.storage.expirations import ExpiryFeed
from pratico_daemon.storage.protocols import (
    Checkpoint,
    HashWrite,
    InvalidData,
    StorageUnavailable,
)

log = logs.get("storage.redis")

# Redis accepts 512 MB keys; ours are ids. 1 KiB refuses a 10 KB "lesson id"
# before it reaches Redis (issue 5's bad-input case) and fits every real name.
MAX_KEY_BYTES = 1024
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")

_PUT_CHECKPOINT = """
local cur = redis.call('HGET', KEYS[1], 'v')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 1
"""


def check_key(key: Any) -> str:
    """A presence key as callers may name it, or `InvalidData` (shared with embedded keys)."""
    if not isinstance(key, str) or not key:
        raise InvalidData(f"key must be a non-empty string, not {key!r:.60}")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidData(f"key of {len(key.encode())} bytes exceeds {MAX_KEY_BYTES}")
    return key


def check_ttl(ttl_s: Any) -> int:
    """A TTL in seconds as whole milliseconds (at least 1), or `InvalidData`."""
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not ttl_s > 0:
        raise InvalidData(f"ttl must be a positive number of seconds, not {ttl_s!r}")
    if not math.isfinite(ttl_s):
        raise InvalidData("ttl must be finite")
    return max(1, round(ttl_s * 1000))


def check_mapping(mapping: Any) -> dict[str, str]:
    if not isinstance(mapping, Mapping):
        raise InvalidData("hash fields must be a mapping of strings")
    for field, value in mapping.items():
        if not isinstance(field, str) or not isinstance(value, str):
            raise InvalidData(f"hash field {field!r:.60} must map a string to a string")
    return dict(mapping)


def _as_str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


def _hset_commands(k: str, fields: dict[str, str], ttl_s: float | None) -> list[tuple[Any, ...]]:
    """`HSET` of the fields (if any), then `PEXPIRE` when a TTL is given."""
    commands: list[tuple[Any, ...]] = []
    if fields:
        commands.append(("HSET", k, *(x for kv in fields.items() for x in kv)))
    if ttl_s is not None:
        commands.append(("PEXPIRE", k, check_ttl(ttl_s)))
    return commands


class RedisPresence:
    """`PresenceStore` on Redis: the seed documents' keys, with `redis.key_prefix`."""

    def __init__(self, bridge: RedisBridge, prefix: str) -> None:
        self._bridge = bridge
        self._prefix = prefix

    def _k(self, key: str) -> str:
        return self._prefix + check_key(key)

    async def hset(self, key: str, mapping: Mapping[str, str], ttl_s: float | None = None) -> None:
        """Set fields; with `ttl_s` the key expires then, without it its TTL is left as is."""
        commands = _hset_commands(self._k(key), check_mapping(mapping), ttl_s)
        if commands:
            await self._bridge.call(Op(tuple(commands), lambda r: None))

    async def hset_many(self, writes: Sequence[HashWrite]) -> list[bool]:
        """One transaction: `EXISTS`, `HSETNX` per default, `HSET`, `PEXPIRE` per write."""
        commands: list[tuple[Any, ...]] = []
        shape: list[int] = []  # commands per write, after its EXISTS
        for write in writes:
            k, fields = self._k(write.key), check_mapping(write.mapping)
            commands.append(("EXISTS", k))
            n = len(commands)
            commands.extend(("HSETNX", k, f, v) for f, v in check_mapping(write.defaults).items()
                            if f not in fields)
            commands.extend(_hset_commands(k, fields, write.ttl_s))
            shape.append(len(commands) - n)
        if not commands:
            return []

        def parse(r: list[Any]) -> list[bool]:
            existed, at = [], 0
            for n in shape:
                existed.append(r[at] > 0)
                at += 1 + n
            return existed

        return await self._bridge.call(Op(tuple(commands), parse))

    async def hgetall(self, key: str) -> dict[str, str]:
        def parse(r: list[Any]) -> dict[str, str]:
            flat = iter(r[0])  # RESP2: field, value, field, value …
            return {_text(f) or "": _text(v) or "" for f, v in zip(flat, flat, strict=True)}

        return await self._bridge.call(Op((("HGETALL", self._k(key)),), parse))

    async def hdel(self, key: str, *fields: str) -> None:
        if fields:
            await self._bridge.call(Op((("HDEL", self._k(key), *fields),), lambda r: None))

    async def set(
        self, key: str, value: str, ttl_s: float | None = None, *, nx: bool = False
    ) -> bool:
        """SET; returns False only when `nx` and the key existed. No TTL: persistent."""
        if not isinstance(value, str):
            raise InvalidData("value must be a string")
        command: tuple[Any, ...] = ("SET", self._k(key), value)
        if ttl_s is not None:
            command += ("PX", check_ttl(ttl_s))
        if nx:
            command += ("NX",)
        return await self._bridge.call(Op((command,), lambda r: bool(r[0])))

    async def get(self, key: str) -> str | None:
        return await self._bridge.call(Op((("GET", self._k(key)),), lambda r: _text(r[0])))

    async def expire(self, key: str, ttl_s: float) -> None:
        ms = check_ttl(ttl_s)
        await self._bridge.call(Op((("PEXPIRE", self._k(key), ms),), lambda r: None))

    async def persist(self, key: str) -> None:
        await self._bridge.call(Op((("PERSIST", self._k(key)),), lambda r: None))

    async def ttl(self, key: str) -> float | None:
        def parse(r: list[Any]) -> float | None:
            return None if r[0] < 0 else r[0] / 1000

        return await self._bridge.call(Op((("PTTL", self._k(key)),), parse))

    async def exists(self, key: str) -> bool:
        return await self._bridge.call(Op((("EXISTS", self._k(key)),), lambda r: r[0] > 0))

    async def delete(self, *keys: str) -> None:
        if keys:
            names = [self._k(k) for k in keys]
            await self._bridge.call(Op((("DEL", *names),), lambda r: None))

    async def scan(self, pattern: str) -> list[str]:
        """Keys matching `pattern` (Redis glob), prefix stripped; several SCAN round trips."""
        if not isinstance(pattern, str) or not pattern:
            raise InvalidData("scan pattern must be a non-empty string")
        full = _GLOB_SPECIAL.sub(r"\\\1", self._prefix) + pattern
        found: set[str] = set()
        cursor = 0
        while True:
            op = Op((("SCAN", cursor, "MATCH", full, "COUNT", 1000),), lambda r: r[0])
            cursor, keys = await self._bridge.call(op)
            found.update(k.decode("utf-8", "replace")[len(self._prefix) :] for k in keys)
            if int(cursor) == 0:
                return sorted(found)


class RedisCheckpoints:
    """`CheckpointStore` on Redis: versioned hashes written by a Lua compare-and-set."""

    def __init__(
        self, bridge: RedisBridge, prefix: str, *, max_bytes: int,
        max_schema: int = checkpoint_codec.MAX_SCHEMA,
    ) -> None:
        self._bridge = bridge
        self._prefix = prefix
        self._index = f"{prefix}pratico:checkpoints"
        self._max_bytes = max_bytes
        self._max_schema = max_schema
        # 16 MiB: one request Redis applies in ~10 ms; a 10 MiB snapshot still fits.
        self.max_request_bytes = 16 * 1024 * 1024

    def _key(self, room_id: str) -> str:
        return f"{self._prefix}pratico:checkpoint:{check_key(room_id)}"

    async def put_many(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Validate every snapshot, then write them in one atomic request.

        Each room's write is independent, so a batch over `max_request_bytes`
        (large tldraw snapshots) goes as several requests, each atomic.
        """
        encoded = [
            (cp, checkpoint_codec.encode(
                cp, max_bytes=self._max_bytes, max_schema=self._max_schema
            ))
            for cp in checkpoints
        ]
        commands: list[tuple[Any, ...]] = []
        size = 0
        for cp, data in encoded:
            if commands and size + len(data) > self.max_request_bytes:
                await self._bridge.call(Op(tuple(commands), lambda r: None, size))
                commands, size = [], 0
            commands.append((
                "EVAL", _PUT_CHECKPOINT, 2, self._key(cp.room_id), self._index,
                cp.version, data, cp.room_id,
            ))
            size += len(data)
        if commands:
            await self._bridge.call(Op(tuple(commands), lambda r: None, size))

    async def get(self, room_id: str) -> Checkpoint | None:
        key = self._key(room_id)
        raw = await self._bridge.call(Op((("HGET", key, "d"),), lambda r: r[0]))
        return None if raw is None else self._decode(raw, key)

    async def delete(self, room_id: str) -> None:
        commands = (("DEL", self._key(room_id)), ("SREM", self._index, room_id))
        await self._bridge.call(Op(commands, lambda r: None))

    async def list(self, kind: str | None = None) -> list[Checkpoint]:
        """Every restorable snapshot; unreadable ones are logged and skipped."""
        members = await self._bridge.call(Op((("SMEMBERS", self._index),), lambda r: r[0]))
        room_ids = sorted(m.decode("utf-8", "replace") for m in members)
        out: list[Checkpoint] = []
        for start in range(0, len(room_ids), 500):
            chunk = room_ids[start : start + 500]
            keys = [self._key(room_id) for room_id in chunk]
            raws = await self._bridge.call(
                Op(tuple(("HGET", key, "d") for key in keys), lambda r: r)
            )
            stale = [room_id for room_id, raw in zip(chunk, raws, strict=True) if raw is None]
            if stale:  # deleted behind the index's back (by hand, or a node mid-delete)
                await self._bridge.call(Op((("SREM", self._index, *stale),), lambda r: None))
            for key, raw in zip(keys, raws, strict=True):
                cp = None if raw is None else self._decode(raw, key)
                if cp is not None and (kind is None or cp.kind == kind):
                    out.append(cp)
        return out

    def _decode(self, raw: bytes, key: str) -> Checkpoint | None:
        return checkpoint_codec.decode(raw, where=key, max_schema=self._max_schema)


class _RedisHealth:
    """One `/readyz` line for Redis: commands answer and the subscription is alive."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._problems: dict[str, str] = {"subscription": "connecting"}
        self._publish()

    def set(self, part: str, ok: bool, detail: str = "") -> None:
        if ok:
            self._problems.pop(part, None)
        else:
            self._problems[part] = detail or "failing"
        self._publish()

    def _publish(self) -> None:
        ok = not self._problems
        detail = "; ".join(f"{k}: {v}" for k, v in sorted(self._problems.items()))
        self._services.health.set("redis", ok, detail)
        self._services.metrics.store_up.labels(store="redis").set(1 if ok else 0)


class KeyspaceSubscription:
    """The `__keyevent@<db>__:expired` subscription, kept alive and health-checked."""

    def __init__(
        self, url: str, prefix: str, feed: ExpiryFeed, services: Services,
        health: _RedisHealth, *, health_interval_s: float = 1.0,
    ) -> None:
        # health_interval_s: a PING per idle second costs nothing and notices a
        # silently dead connection within ~2 s, well inside any presence grace.
        self.name = f"pratico-sub-{uuid.uuid4().hex[:12]}"
        # RESP2, the protocol `_session` reads: a subscribed client's PONG is
        # ["pong", ""] there. Under redis-py 8.2's default, RESP3, it is a plain
        # "PONG", went unrecognised, and the subscription was torn down every 3 s.
        self._pool = aredis.ConnectionPool.from_url(
            url, socket_timeout=None, retry=Retry(NoBackoff(), 0), client_name=self.name,
            protocol=2,
        )
        db = int(self._pool.connection_kwargs.get("db", 0) or 0)
        self.channel = f"__keyevent@{db}__:expired"
        self._prefix = prefix.encode()
        self._feed = feed
        self._services = services
        self._health = health
        self.health_interval_s = health_interval_s
        self._subscribed = trio.Event()
        self._probe: bytes | None = None
        self._probe_seen = trio.Event()
        self._probe_wanted = False
        self._probe_requested = trio.Event()
        self.sessions = 0

    def __repr__(self) -> str:
        state = "SUBSCRIBED" if self._subscribed.is_set() else "DOWN"
        return f"<KeyspaceSubscription {self.name} {state} sessions={self.sessions}>"

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    async def wait_subscribed(self) -> None:
        """Return once the subscription is live (again)."""
        await self._subscribed.wait()

    async def run(
        self, bridge: RedisBridge, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Subscribe, and re-subscribe whenever the connection is lost, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._probe_loop, bridge)
            task_status.started()
            await self._keep_subscribed(bridge)

    async def _keep_subscribed(self, bridge: RedisBridge) -> None:
        failures = 0
        while True:
            await self._enable_notifications(bridge)
            try:
                await aio_as_trio(self._session)()
            except (*_SUBSCRIPTION_ERRORS, redis.exceptions.ResponseError) as exc:
                detail = f"subscription lost: {type(exc).__name__}: {exc}"
            was_up = self._subscribed.is_set()
            self._subscribed = trio.Event()
            self._health.set("subscription", False, detail)
            failures = 0 if was_up else failures + 1
            delay = min(0.05 * 2**failures, 2.0)
            log.warning("redis %s; retrying in %.2fs", detail, delay)
            await trio.sleep(delay)

    def _on_subscribed(self) -> None:
        """Publish a new subscription: health, restart metric, RESYNC, probe."""
        self._subscribed.set()
        self.sessions += 1
        if self.sessions > 1:
            self._services.metrics.subscription_restarts.inc()
            self._feed.resync()
            log.info("redis keyspace subscription re-established (%s)", self.name)
        self._health.set("subscription", True)
        if self._probe_wanted:
            self._probe_requested.set()

    # ---- notify-keyspace-events -----------------------------------------------

    async def _enable_notifications(self, bridge: RedisBridge) -> None:
        """Add `Ex` to notify-keyspace-events (keeping other flags), or plan a probe."""
        try:
            current = await bridge.call(  # RESP2: [name, value]
                Op((("CONFIG", "GET", "notify-keyspace-events"),), lambda r: r[0])
            )
            flags = _as_str(current[1]) if len(current) == 2 else ""
            wanted = flags + ("E" if "E" not in flags else "")
            wanted += "" if ("x" in flags or "A" in flags) else "x"
            if wanted != flags:
                await bridge.call(
                    Op((("CONFIG", "SET", "notify-keyspace-events", wanted),), lambda r: None)
                )
                log.info("redis notify-keyspace-events set to %r (was %r)", wanted, flags)
        except InvalidData as exc:  # CONFIG refused: managed Redis
            if not self._probe_wanted:
                log.warning("redis refused CONFIG (%s); probing for expiry events", exc)
            self._probe_wanted = True
            return
        except StorageUnavailable:
            return  # the session will fail too, and retry
        self._probe_wanted = False
        self._services.health.set("redis_notifications", True)

    async def _probe_loop(self, bridge: RedisBridge) -> None:
        while True:
            await self._probe_requested.wait()
            self._probe_requested = trio.Event()
            await self._run_probe(bridge)

    async def _run_probe(self, bridge: RedisBridge) -> None:
        """Set a key with a 100 ms TTL and wait for its expiry event (3 s at most)."""
        probe = f"pratico:probe:{uuid.uuid4().hex}"
        self._probe = self._prefix + probe.encode()
        self._probe_seen = trio.Event()
        try:
            await bridge.call(Op((("SET", self._probe, "1", "PX", 100),), lambda r: None))
        except (StorageUnavailable, InvalidData):
            return
        with trio.move_on_after(3.0):
            await self._probe_seen.wait()
        if self._probe_seen.is_set():
            self._services.health.set("redis_notifications", True, "enabled by the server")
        else:
            log.error("redis sends no expiry events and refuses CONFIG: presence expiry "
                      "cannot work; set notify-keyspace-events Ex on the server")
            self._services.health.set(
                "redis_notifications", False,
                "no expiry events and CONFIG refused: set notify-keyspace-events Ex",
            )

    # ---- asyncio side ---------------------------------------------------------

    async def _session(self) -> None:
        """One subscription connection's life; raises when it is lost."""
        loop = asyncio.get_running_loop()
        conn = self._pool.make_connection()
        try:
            async with asyncio.timeout(5.0):
                await conn.connect()
                await conn.send_command("SUBSCRIBE", self.channel)
                reply = await conn.read_response(timeout=5.0, push_request=True)
            if not reply or reply[0] != b"subscribe":
                raise redis.exceptions.ConnectionError(f"unexpected SUBSCRIBE reply {reply!r}")
            self._on_subscribed()
            ping_sent: float | None = None
            while True:
                msg = await conn.read_response(
                    timeout=self.health_interval_s, push_request=True
                )
                now = loop.time()
                if msg is None:
                    # A PONG gets two intervals: one stalled loop step (a GC pass, a
                    # burst of work) must not flap the subscription and lose events.
                    if ping_sent is not None:
                        if now - ping_sent >= 2 * self.health_interval_s:
                            raise redis.exceptions.TimeoutError(
                                f"no PONG within {2 * self.health_interval_s:g}s"
                            )
                        continue
                    await conn.send_command("PING")
                    ping_sent = now
                    continue
                if msg[0] == b"message":
                    self._deliver(msg[2])
                elif msg[0] == b"pong":
                    ping_sent = None
                if ping_sent is not None and now - ping_sent > 3 * self.health_interval_s:
                    raise redis.exceptions.TimeoutError("PONG overdue")
        finally:
            await conn.disconnect()

    def _deliver(self, key: bytes) -> None:
        if not key.startswith(self._prefix):
            return  # another application's key, or another prefix's daemon
        if key == self._probe:
            self._probe_seen.set()
            return
        self._feed.push(key[len(self._prefix) :].decode("utf-8", "replace"))


_SUBSCRIPTION_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
    TimeoutError,  # asyncio.TimeoutError too, since 3.11
    EOFError,
)


@attrs.define
class RedisStores:
    """What `open_redis` yields; `open_stores` takes the pieces it needs."""

    checkpoints: RedisCheckpoints
    presence: RedisPresence
    expirations: trio.MemoryReceiveChannel[str]
    bridge: RedisBridge
    subscription: KeyspaceSubscription
    feed: ExpiryFeed


def make_client(url: str, **kwargs: Any) -> Any:
    """A redis-py asyncio client as the daemon wants it (STACK-NOTES.md).

    `socket_timeout=None` (redis-py's default 5 s made every command 1.7×
    slower; deadlines live on the trio side) and no hidden retries: a retried
    `MULTI … EXEC` whose first EXEC did land would apply a batch twice, and the
    bridge already fails callers fast and reconnects.
    """
    return aredis.Redis.from_url(
        url, socket_timeout=None, retry=Retry(NoBackoff(), 0), **kwargs
    )


@asynccontextmanager
async def open_redis(
    config: Config, services: Services, *, health_interval_s: float = 1.0,
    expirations_size: int = 1000,
) -> AsyncIterator[RedisStores]:
    """Redis checkpoints + presence + expirations; call inside `aio.open_loop()`.

    Does not fail when Redis is down at start: `/readyz` says so and the
    store reconnects by itself (DESIGN.md: rooms keep working in memory).
    """
    url = config.redis.url
    if url is None:
        raise ValueError("open_redis needs redis.url")
    prefix = config.redis.key_prefix
    health = _RedisHealth(services)
    async with background_tasks() as nursery:
        bridge = RedisBridge(
            url, on_health=lambda ok, detail: health.set("commands", ok, detail)
        )
        await nursery.start(bridge.run)
        feed = ExpiryFeed(expirations_size)
        await nursery.start(feed.run)
        subscription = KeyspaceSubscription(
            url, prefix, feed, services, health, health_interval_s=health_interval_s
        )
        await nursery.start(subscription.run, bridge)
        stores = RedisStores(
            checkpoints=RedisCheckpoints(
                bridge, prefix, max_bytes=config.limits.max_snapshot_bytes
            ),
            presence=RedisPresence(bridge, prefix),
            expirations=feed.receive,
            bridge=bridge,
            subscription=subscription,
            feed=feed,
        )
        yield stores


__all__ = [
    "KeyspaceSubscription",
    "RedisCheckpoints",
    "RedisPresence",
    "RedisStores",
    "check_key",
    "check_mapping",
    "check_ttl",
    "make_client",
    "open_redis",
]
