"""The keyspace-notification subscription: killed, frozen, overflowing, down at start."""

from __future__ import annotations

from pathlib import Path

import trio

from pratico_daemon.services import Services
from pratico_daemon.storage.protocols import RESYNC
from pratico_daemon.storage.redis_store import RedisStores, open_redis
from tests.support.redis import RawRedis, TcpProxy, make_services, redis_config, wait_for


async def next_expiry(stores: RedisStores, *, skip_resync: bool = True) -> str:
    with trio.fail_after(10):
        while True:
            name = await stores.expirations.receive()
            if name != RESYNC or not skip_resync:
                return name


def restarts(services: Services) -> float:
    return services.metrics.subscription_restarts._value.get()  # type: ignore[no-any-return]


async def test_health_reports_the_subscription(
    redis_stores: RedisStores, services: Services, raw_redis: RawRedis
) -> None:
    assert services.health.checks["redis"].ok
    assert services.health.checks["redis_notifications"].ok
    reply = await raw_redis("CONFIG", "GET", "notify-keyspace-events")
    value = next(iter(reply.values()))
    flags = value.decode() if isinstance(value, bytes) else value
    assert "E" in flags
    assert "x" in flags or "A" in flags


async def test_client_kill_is_noticed_and_notifications_resume(
    redis_stores: RedisStores, services: Services, raw_redis: RawRedis
) -> None:
    sub = redis_stores.subscription
    listing = (await raw_redis("CLIENT", "LIST")).decode()
    ids = [
        line.split("id=")[1].split()[0]
        for line in listing.splitlines()
        if f"name={sub.name} " in line
    ]
    assert len(ids) == 1, listing
    assert restarts(services) == 0

    await raw_redis("CLIENT", "KILL", "ID", ids[0])

    await wait_for(lambda: restarts(services) == 1)
    await sub.wait_subscribed()
    assert services.health.checks["redis"].ok
    # Notifications published while it was down are lost: the consumer is told to rescan.
    assert await next_expiry(redis_stores, skip_resync=False) == RESYNC
    await redis_stores.presence.set("alive:org_o_user_after_kill", "x", ttl_s=0.1)
    assert await next_expiry(redis_stores) == "alive:org_o_user_after_kill"
    listing = (await raw_redis("CLIENT", "LIST")).decode()
    assert listing.count(f"name={sub.name} ") == 1  # one subscription, not a leak


async def test_a_healthy_subscription_stays_up(
    aio_loop: object, state_dir: Path, redis_prefix: str
) -> None:
    """Many PINGs, no restart: an unrecognised PONG once tore it down every 3 intervals."""
    services = make_services(redis_config(state_dir, redis_prefix))
    async with open_redis(services.config, services, health_interval_s=0.1) as stores:
        await stores.subscription.wait_subscribed()
        await trio.sleep(1.5)  # 15 health intervals: several PING/PONG rounds
        assert restarts(services) == 0
        assert stores.subscription.sessions == 1
        assert services.health.checks["redis"].ok
        await stores.presence.set("still_here", "x", ttl_s=0.1)
        assert await next_expiry(stores) == "still_here"


async def test_silently_dead_subscription_is_noticed(
    aio_loop: object, redis_proxy: TcpProxy, state_dir: Path, redis_prefix: str,
    raw_redis: RawRedis,
) -> None:
    """Frozen traffic (no FIN, no RST): only the PING health check can tell."""
    services = make_services(redis_config(state_dir, redis_prefix, url=redis_proxy.url))
    async with open_redis(services.config, services, health_interval_s=0.2) as stores:
        await stores.subscription.wait_subscribed()
        redis_proxy.freeze()
        await wait_for(lambda: not services.health.checks["redis"].ok, limit_s=5)
        assert "subscription" in services.health.checks["redis"].detail
        redis_proxy.thaw()
        await wait_for(lambda: restarts(services) == 1)
        await stores.subscription.wait_subscribed()
        await wait_for(lambda: services.health.checks["redis"].ok)
        await stores.presence.set("after_freeze", "x", ttl_s=0.1)
        assert await next_expiry(stores) == "after_freeze"


async def test_redis_down_at_start_then_up(
    aio_loop: object, redis_proxy: TcpProxy, state_dir: Path, redis_prefix: str,
    raw_redis: RawRedis,
) -> None:
    services = make_services(redis_config(state_dir, redis_prefix, url=redis_proxy.url))
    redis_proxy.refusing = True
    async with open_redis(services.config, services, health_interval_s=0.2) as stores:
        await trio.sleep(0.3)
        assert not services.health.checks["redis"].ok
        assert not stores.subscription.subscribed
        redis_proxy.refusing = False
        with trio.fail_after(10):
            await stores.subscription.wait_subscribed()
        await wait_for(lambda: services.health.checks["redis"].ok)
        assert restarts(services) == 0  # the first subscription is not a restart
        await stores.presence.set("k", "v", ttl_s=0.1)
        assert await next_expiry(stores) == "k"


async def test_overflow_drops_then_sends_one_resync(
    aio_loop: object, services: Services
) -> None:
    async with open_redis(services.config, services, expirations_size=3) as stores:
        await stores.subscription.wait_subscribed()
        for i in range(20):
            await stores.presence.set(f"burst:{i}", "x", ttl_s=0.05)
        await wait_for(lambda: stores.feed.statistics().dropped == 17)
        received = [await stores.expirations.receive() for _ in range(4)]
        assert received[3] == RESYNC  # after the 3 that fitted, as soon as there was room
        assert all(name.startswith("burst:") for name in received[:3])
        with trio.move_on_after(0.3):
            extra = await stores.expirations.receive()
            raise AssertionError(f"only one RESYNC expected, got {extra!r}")
        assert await stores.presence.scan("burst:*") == []  # what a resync would find


async def test_config_refused_falls_back_to_a_probe(
    aio_loop: object, state_dir: Path, redis_prefix: str, raw_redis: RawRedis
) -> None:
    """Managed Redis refuses CONFIG: an ACL user without it plays that part here.

    Notifications are on server-wide (set by the operator, here by the test),
    so the probe key's expiry event arrives and readiness says so.
    """
    user = f"pratico_noconfig_{redis_prefix.strip(':').replace(':', '_')}"
    reply = await raw_redis("CONFIG", "GET", "notify-keyspace-events")
    flags = next(iter(reply.values()))
    flags = flags.decode() if isinstance(flags, bytes) else flags
    if "E" not in flags or not ({"x", "A"} & set(flags)):  # keep whatever else is set
        await raw_redis("CONFIG", "SET", "notify-keyspace-events", flags + "Ex")
    await raw_redis("ACL", "SETUSER", user, "on", "nopass", "~*", "&*", "+@all", "-config")
    try:
        url = f"redis://{user}:x@127.0.0.1:6379/0"
        services = make_services(redis_config(state_dir, redis_prefix, url=url))
        async with open_redis(services.config, services) as stores:
            await stores.subscription.wait_subscribed()
            await wait_for(lambda: "redis_notifications" in services.health.checks)
            check = services.health.checks["redis_notifications"]
            assert check.ok
            assert check.detail == "enabled by the server"
            await stores.presence.set("k", "v", ttl_s=0.1)
            assert await next_expiry(stores) == "k"  # the probe key is not delivered
    finally:
        await raw_redis("ACL", "DELUSER", user)
