"""The sweep of dead nodes: who is adopted, who is left alone, and only once (real Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from pratico_daemon.classroom.node_leases import NODES, NodeLeases, lease_key, teachers_key
from pratico_daemon.services import Services
from pratico_daemon.storage.redis_store import open_redis


@pytest.fixture
async def presence(aio_loop: object, services: Services) -> AsyncIterator[Any]:
    async with open_redis(services.config, services) as stores:
        yield stores.presence


def leases(presence: Any, node: str) -> NodeLeases:
    return NodeLeases(lambda: presence, node, 30.0, enabled=True)


class Adoptions:
    """An `adopt` that records (org, user, node) and puts every teacher in grace."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    async def __call__(self, org_id: str, user_id: str, node: str) -> bool:
        self.calls.append((org_id, user_id, node))
        return True


async def test_the_sweep_adopts_only_teachers_no_live_node_holds(presence: Any) -> None:
    dead, alive_node, sweeper = (leases(presence, n) for n in ("dead", "b", "c"))
    for node in (dead, alive_node, sweeper):
        await node.renew()
    await dead.hold("org1", "t1")  # left behind by the dead node only
    await dead.hold("org1", "t2")  # ... and back on node b since
    await alive_node.hold("org1", "t2")
    await presence.delete(lease_key("dead"))  # its lease ran out

    adopt = Adoptions()
    assert await sweeper.sweep(adopt) == 1
    assert adopt.calls == [("org1", "t1", "dead")]
    assert not await presence.exists(teachers_key("dead"))
    assert set(await presence.hgetall(NODES)) == {"b", "c"}
    # Node b's own teachers and lease are untouched; a second sweep finds nothing.
    assert await presence.hgetall(teachers_key("b")) == {"org1/t2": "1"}
    assert await sweeper.sweep(adopt) == 0


async def test_two_sweepers_adopt_a_dead_node_once(presence: Any) -> None:
    dead = leases(presence, "dead")
    await dead.renew()
    await dead.hold("org1", "t1")
    await presence.delete(lease_key("dead"))
    calls: list[str] = []

    async def adopt(org_id: str, user_id: str, node: str) -> bool:
        calls.append(user_id)
        await trio.sleep(0.05)  # both sweeps are in flight together
        return True

    first, second = leases(presence, "a"), leases(presence, "b")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(first.sweep, adopt)
        nursery.start_soon(second.sweep, adopt)
    assert calls == ["t1"]
    assert first.adopted + second.adopted == 1


async def test_release_lets_go_and_embedded_mode_does_nothing(presence: Any) -> None:
    node = leases(presence, "n1")
    await node.hold("org1", "t1")
    await node.release("org1", "t1")
    assert await presence.hgetall(teachers_key("n1")) == {}
    off = NodeLeases(lambda: presence, "n2", 30.0, enabled=False)
    await off.hold("org1", "t1")
    assert not await presence.exists(teachers_key("n2"))


async def test_a_node_restarted_under_its_id_adopts_its_leftovers(presence: Any) -> None:
    before = leases(presence, "n1")
    await before.renew()
    await before.hold("org1", "t1")  # ... then the process is killed
    after = leases(presence, "n1")  # the same node id, a new run
    adopt = Adoptions()
    assert await after.adopt_stale_holds(adopt) == 1
    assert adopt.calls == [("org1", "t1", "n1")]


async def test_renewal_writes_the_holds_back(presence: Any) -> None:
    node = leases(presence, "n1")
    await node.renew([("org1", "t1"), ("org2", "t9")])
    assert await presence.hgetall(teachers_key("n1")) == {"org1/t1": "1", "org2/t9": "1"}
    assert await presence.exists(lease_key("n1"))


async def test_held_elsewhere_counts_only_live_other_nodes(presence: Any) -> None:
    a, b = leases(presence, "a"), leases(presence, "b")
    for node in (a, b):
        await node.renew()
    await b.hold("org1", "t1")
    assert not await b.held_elsewhere("org1", "t1")  # its own hold does not count
    assert await a.held_elsewhere("org1", "t1")
    assert not await a.held_elsewhere("org1", "t2")
    await presence.delete(lease_key("b"))  # b is dead: its holds no longer count
    assert not await a.held_elsewhere("org1", "t1")
