"""Embedded TTL keys on trio's clock: grace periods of minutes run in microseconds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from pratico_daemon.storage.embedded_keys import EmbeddedKeys, open_embedded_keys
from pratico_daemon.storage.protocols import RESYNC
from tests.conftest import make_config
from tests.support.redis import make_services


@pytest.fixture
async def keys(tmp_path: Path) -> AsyncIterator[EmbeddedKeys]:
    services = make_services(make_config(tmp_path / "state"))
    async with open_embedded_keys(services.config, services, expirations_size=4) as opened:
        yield opened


async def test_grace_period_expires_on_time(
    autojump_clock: trio.abc.Clock, keys: EmbeddedKeys
) -> None:
    start = trio.current_time()
    await keys.presence.hset("alive:org_o_user_t", {"state": "disconnect"}, ttl_s=300)
    assert await keys.expirations.receive() == "alive:org_o_user_t"
    assert trio.current_time() - start == pytest.approx(300, abs=0.01)
    assert not await keys.presence.exists("alive:org_o_user_t")


async def test_reconnect_within_grace_keeps_the_key(
    autojump_clock: trio.abc.Clock, keys: EmbeddedKeys
) -> None:
    p = keys.presence
    await p.hset("alive:org_o_user_t", {"state": "disconnect"}, ttl_s=300)
    await trio.sleep(299)
    await p.hset("alive:org_o_user_t", {"state": "connect"})
    await p.persist("alive:org_o_user_t")
    with trio.move_on_after(3600):
        name = await keys.expirations.receive()
        pytest.fail(f"{name} expired although persisted")
    assert await p.hgetall("alive:org_o_user_t") == {"state": "connect"}


async def test_nearer_deadline_wakes_the_timer_and_later_one_is_kept(
    autojump_clock: trio.abc.Clock, keys: EmbeddedKeys
) -> None:
    p = keys.presence
    start = trio.current_time()
    await p.set("far", "x", ttl_s=1000)
    await p.set("cooldown:org_o_user_u", "1", ttl_s=300)
    await p.expire("far", 5)  # moved nearer: must expire at 5 s, not 1000 s
    assert await keys.expirations.receive() == "far"
    assert trio.current_time() - start == pytest.approx(5, abs=0.01)
    await p.expire("cooldown:org_o_user_u", 600)  # moved later: the old deadline is ignored
    assert await keys.expirations.receive() == "cooldown:org_o_user_u"
    assert trio.current_time() - start == pytest.approx(605, abs=0.01)


async def test_ttl_counts_down_and_reads_never_see_expired_keys(
    autojump_clock: trio.abc.Clock, keys: EmbeddedKeys
) -> None:
    p = keys.presence
    await p.set("k", "v", ttl_s=10)
    await trio.sleep(4)
    assert await p.ttl("k") == pytest.approx(6)
    await trio.sleep(6)
    assert await p.get("k") is None
    assert await keys.expirations.receive() == "k"  # reported once, by whoever saw it first
    with trio.move_on_after(100):
        await keys.expirations.receive()
        pytest.fail("expired twice")


async def test_overflow_drops_then_sends_one_resync(
    autojump_clock: trio.abc.Clock, keys: EmbeddedKeys
) -> None:
    for i in range(10):
        await keys.presence.set(f"k{i}", "x", ttl_s=1 + i * 0.001)
    await trio.sleep(2)
    assert keys.feed.statistics().dropped == 6
    received = [await keys.expirations.receive() for _ in range(5)]
    assert received == ["k0", "k1", "k2", "k3", RESYNC]
    with trio.move_on_after(10):
        extra = await keys.expirations.receive()
        pytest.fail(f"unexpected {extra!r}")
    assert await keys.presence.scan("k*") == []
