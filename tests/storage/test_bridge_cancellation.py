"""The batching bridge under cancellation, timeouts and a Redis that goes away.

A `TcpProxy` between the bridge and Redis freezes traffic on demand, which
pins a batch "in flight" for as long as the test needs.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import outcome
import pytest
import trio
import trio.lowlevel

from pratico_daemon.storage.bridge import Op, RedisBridge
from pratico_daemon.storage.protocols import InvalidData, StorageUnavailable
from tests.support.redis import REDIS_URL, RawRedis, TcpProxy, wait_for

PING = Op((("PING",),), lambda r: r[0])


@asynccontextmanager
async def running_bridge(url: str, **kwargs: Any) -> AsyncIterator[RedisBridge]:
    """A bridge on its own connection, its worker running."""
    async with trio.open_nursery() as nursery:
        bridge = RedisBridge(url, **kwargs)
        await nursery.start(bridge.run)
        yield bridge
        nursery.cancel_scope.cancel()


def set_and_get(key: str, value: str) -> Op[bytes]:
    return Op((("SET", key, value), ("GET", key)), lambda r: r[1])


async def test_cancelled_callers_get_nothing_and_queued_ones_never_run(
    aio_loop: object, redis_proxy: TcpProxy, raw_redis: RawRedis, redis_prefix: str
) -> None:
    scopes: dict[str, trio.CancelScope] = {}
    results: dict[str, outcome.Outcome[Any]] = {}

    async def caller(bridge: RedisBridge, name: str) -> None:
        with trio.CancelScope() as scopes[name]:
            results[name] = await outcome.acapture(
                bridge.call, set_and_get(redis_prefix + name, name)
            )

    async with (
        running_bridge(redis_proxy.url, timeout_s=30) as bridge,
        trio.open_nursery() as nursery,
    ):
        assert await bridge.call(PING)
        redis_proxy.freeze()
        nursery.start_soon(caller, bridge, "in_flight")
        await wait_for(lambda: bridge.statistics().in_flight == 1)
        nursery.start_soon(caller, bridge, "queued")
        nursery.start_soon(caller, bridge, "kept")
        await wait_for(lambda: bridge.statistics().queued == 2)
        scopes["in_flight"].cancel()
        scopes["queued"].cancel()
        await wait_for(lambda: len(results) == 2)
        # Both left at once although Redis has not answered; neither got a result.
        assert _was_cancelled(results["in_flight"])
        assert _was_cancelled(results["queued"])
        redis_proxy.thaw()
        await wait_for(lambda: "kept" in results)
        assert results["kept"].unwrap() == b"kept"
        # The in-flight batch was applied whole; the queued request never reached Redis.
        assert await raw_redis("GET", redis_prefix + "in_flight") == b"in_flight"
        assert await raw_redis("EXISTS", redis_prefix + "queued") == 0
        assert bridge.statistics().dropped_cancelled == 1
        assert await bridge.call(PING)


async def test_random_cancellation_leaves_no_partial_batch(
    aio_loop: object, raw_redis: RawRedis, redis_prefix: str
) -> None:
    """400 callers cancelled at random moments: pairs are applied both or neither."""
    rng = random.Random(1234)
    got: dict[int, bytes] = {}

    def pair(i: int) -> Op[bytes]:
        a, b = f"{redis_prefix}a{i}", f"{redis_prefix}b{i}"
        return Op((("SET", a, str(i)), ("SET", b, str(i)), ("GET", a)), lambda r: r[2])

    async def caller(bridge: RedisBridge, i: int, delay: float) -> None:
        with trio.move_on_after(delay):
            got[i] = await bridge.call(pair(i))

    async with running_bridge(REDIS_URL, max_batch=32) as bridge:
        async with trio.open_nursery() as callers:
            for i in range(400):
                callers.start_soon(caller, bridge, i, rng.choice([0, 0.0005, 0.002, 0.01, 1]))
                if i % 50 == 0:
                    await trio.lowlevel.checkpoint()
        await wait_for(lambda: bridge.statistics().queued == 0)
        await wait_for(lambda: bridge.statistics().in_flight == 0)
        assert all(value == str(i).encode() for i, value in got.items())  # each its own
        assert 0 < len(got) < 400  # some finished, some were cancelled
        a_keys = {k[len(redis_prefix) + 1 :] for k in await _keys(raw_redis, redis_prefix + "a*")}
        b_keys = {k[len(redis_prefix) + 1 :] for k in await _keys(raw_redis, redis_prefix + "b*")}
        assert a_keys == b_keys  # never one half of a caller's op
        assert {str(i).encode() for i in got} <= a_keys
        stats = bridge.statistics()
        assert stats.up
        assert stats.dropped_cancelled > 0
        assert await bridge.call(PING)


def _was_cancelled(result: outcome.Outcome[Any]) -> bool:
    return isinstance(result, outcome.Error) and isinstance(result.error, trio.Cancelled)


async def _keys(raw: RawRedis, pattern: str) -> set[bytes]:
    keys: list[bytes] = await raw("KEYS", pattern)
    return set(keys)


async def test_stalled_redis_gives_storage_unavailable_then_recovers(
    aio_loop: object, redis_proxy: TcpProxy
) -> None:
    health: list[bool] = []
    async with running_bridge(
        redis_proxy.url, timeout_s=0.3, on_health=lambda ok, _: health.append(ok)
    ) as bridge:
        assert await bridge.call(PING)
        redis_proxy.freeze()
        start = trio.current_time()
        outcomes: list[outcome.Outcome[Any]] = []

        async def caller() -> None:
            outcomes.append(await outcome.acapture(bridge.call, PING))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller)  # in flight on the frozen connection
            await wait_for(lambda: bridge.statistics().in_flight == 1)
            nursery.start_soon(caller)  # queued behind it
        assert len(outcomes) == 2
        for result in outcomes:
            with pytest.raises(StorageUnavailable):
                result.unwrap()
        assert trio.current_time() - start < 1.0
        redis_proxy.thaw()
        await _until_answers(bridge)
        assert health == [False, True]


async def test_redis_down_fails_callers_promptly_and_reconnects(
    aio_loop: object, redis_proxy: TcpProxy
) -> None:
    async with running_bridge(redis_proxy.url, timeout_s=5) as bridge:
        assert await bridge.call(PING)
        redis_proxy.refusing = True
        redis_proxy.cut()
        start = trio.current_time()
        for _ in range(20):
            with pytest.raises(StorageUnavailable):
                await bridge.call(PING)
        assert trio.current_time() - start < 2.0  # no caller waited for its deadline
        assert not bridge.statistics().up
        redis_proxy.refusing = False
        await _until_answers(bridge)
        assert bridge.statistics().up


async def test_a_refused_command_fails_only_its_caller(aio_loop: object, redis_prefix: str,
                                                       raw_redis: RawRedis) -> None:
    key = redis_prefix + "str"
    await raw_redis("SET", key, "v")
    results: dict[str, outcome.Outcome[Any]] = {}

    async def run(name: str, op: Op[Any]) -> None:
        results[name] = await outcome.acapture(bridge.call, op)

    async with running_bridge(REDIS_URL) as bridge:
        async with trio.open_nursery() as callers:
            callers.start_soon(run, "wrongtype", Op((("HGETALL", key),), lambda r: r[0]))
            callers.start_soon(run, "fine", Op((("GET", key),), lambda r: r[0]))
            callers.start_soon(run, "unknown", Op((("NOSUCHCOMMAND",),), lambda r: r[0]))
            callers.start_soon(run, "unencodable", Op((("SET", key, None),), lambda r: r[0]))
        with pytest.raises(InvalidData):
            results["wrongtype"].unwrap()
        with pytest.raises(InvalidData):
            results["unknown"].unwrap()  # refused at queue time: the batch is retried alone
        with pytest.raises(InvalidData):
            results["unencodable"].unwrap()  # refused by the client before sending
        assert results["fine"].unwrap() == b"v"


async def test_closing_the_bridge_releases_waiting_callers(
    aio_loop: object, redis_proxy: TcpProxy
) -> None:
    result: list[outcome.Outcome[Any]] = []

    async def caller(bridge: RedisBridge) -> None:
        result.append(await outcome.acapture(bridge.call, PING))

    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as inner:
            bridge = RedisBridge(redis_proxy.url, timeout_s=30)
            await inner.start(bridge.run)
            assert await bridge.call(PING)
            redis_proxy.freeze()
            outer.start_soon(caller, bridge)
            await wait_for(lambda: bridge.statistics().in_flight == 1)
            inner.cancel_scope.cancel()
        await wait_for(lambda: bool(result))
    with pytest.raises(StorageUnavailable, match="closed"):
        result[0].unwrap()
    with pytest.raises(StorageUnavailable):
        await bridge.call(PING)


async def _until_answers(bridge: RedisBridge) -> None:
    with trio.fail_after(5):
        while True:
            try:
                await bridge.call(PING)
                return
            except StorageUnavailable:
                await trio.sleep(0.05)
