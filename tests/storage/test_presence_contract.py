"""One contract for `PresenceStore`: real Redis and the embedded TTL keys behave alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from pratico_daemon.services import Services
from pratico_daemon.storage.embedded_keys import open_embedded_keys
from pratico_daemon.storage.protocols import RESYNC, HashWrite, InvalidData, PresenceStore
from pratico_daemon.storage.redis_store import open_redis
from tests.conftest import make_config
from tests.support.redis import RawRedis, make_services, redis_config


@attrs.frozen
class Kit:
    kind: str
    presence: PresenceStore
    expirations: trio.MemoryReceiveChannel[str]


@pytest.fixture(params=["redis", "embedded"])
async def kit(
    request: pytest.FixtureRequest, aio_loop: object, services: Services, tmp_path: Path
) -> AsyncIterator[Kit]:
    if request.param == "redis":
        async with open_redis(services.config, services, health_interval_s=0.5) as stores:
            with trio.fail_after(10):
                await stores.subscription.wait_subscribed()
            yield Kit("redis", stores.presence, stores.expirations)
    else:
        embedded = make_services(make_config(tmp_path / "embedded"))
        async with open_embedded_keys(embedded.config, embedded) as keys:
            yield Kit("embedded", keys.presence, keys.expirations)


async def test_hash_roundtrip_and_fields(kit: Kit) -> None:
    p = kit.presence
    await p.hset("alive:org_o1_user_u1", {"login_time": "1700000000", "state": "connect"})
    assert await p.hgetall("alive:org_o1_user_u1") == {
        "login_time": "1700000000", "state": "connect"
    }
    await p.hset("alive:org_o1_user_u1", {"state": "disconnect"})
    assert (await p.hgetall("alive:org_o1_user_u1"))["state"] == "disconnect"
    await p.hdel("alive:org_o1_user_u1", "login_time")
    assert await p.hgetall("alive:org_o1_user_u1") == {"state": "disconnect"}
    await p.hdel("alive:org_o1_user_u1", "state")  # last field gone: the key is gone
    assert not await p.exists("alive:org_o1_user_u1")
    assert await p.hgetall("never-set") == {}


async def test_hset_ttl_applies_and_none_keeps_it(kit: Kit) -> None:
    p = kit.presence
    await p.hset("u1", {"sid": "s1"}, ttl_s=86400)
    ttl = await p.ttl("u1")
    assert ttl is not None
    assert 86000 < ttl <= 86400
    await p.hset("u1", {"lesson_id": "l1"})  # no ttl given: the TTL stays
    ttl = await p.ttl("u1")
    assert ttl is not None
    assert ttl > 86000
    await p.persist("u1")
    assert await p.ttl("u1") is None
    assert await p.hgetall("u1") == {"sid": "s1", "lesson_id": "l1"}


async def test_set_get_nx_and_ttl(kit: Kit) -> None:
    p = kit.presence
    assert await p.set("cooldown:org_o_user_u", "1", ttl_s=300, nx=True)
    assert not await p.set("cooldown:org_o_user_u", "2", ttl_s=300, nx=True)
    assert await p.get("cooldown:org_o_user_u") == "1"
    ttl = await p.ttl("cooldown:org_o_user_u")
    assert ttl is not None
    assert 299 < ttl <= 300
    assert await p.set("cooldown:org_o_user_u", "3")  # plain SET drops the TTL, like Redis
    assert await p.get("cooldown:org_o_user_u") == "3"
    assert await p.ttl("cooldown:org_o_user_u") is None
    assert await p.get("missing") is None
    assert await p.ttl("missing") is None


async def test_expire_exists_delete_and_scan(kit: Kit) -> None:
    p = kit.presence
    for lesson in ("l1", "l2", "l3"):
        await p.hset(f"lesson_seat_{lesson}", {"1": "", "2": ""})
    await p.set("lesson_teacher_l1", "x")
    await p.expire("lesson_seat_l1", 60)
    ttl = await p.ttl("lesson_seat_l1")
    assert ttl is not None
    assert 59 < ttl <= 60
    assert await p.scan("lesson_seat_*") == ["lesson_seat_l1", "lesson_seat_l2", "lesson_seat_l3"]
    assert await p.scan("lesson_*_l1") == ["lesson_seat_l1", "lesson_teacher_l1"]
    await p.delete("lesson_seat_l2", "lesson_seat_l3", "not-there")
    assert not await p.exists("lesson_seat_l2")
    assert await p.exists("lesson_seat_l1")
    assert await p.scan("lesson_seat_*") == ["lesson_seat_l1"]
    await p.expire("absent-key", 5)  # a no-op, not an error
    assert not await p.exists("absent-key")


async def test_bad_input_is_refused_and_changes_nothing(kit: Kit) -> None:
    p = kit.presence
    with pytest.raises(InvalidData):
        await p.hset("x" * 10_000, {"a": "b"})  # a lesson id of 10 KB
    with pytest.raises(InvalidData):
        await p.hset("", {"a": "b"})
    with pytest.raises(InvalidData):
        await p.hset("k", {"a": 1})  # type: ignore[dict-item]
    with pytest.raises(InvalidData):
        await p.set("k", 5)  # type: ignore[arg-type]
    for bad_ttl in (0, -1, float("nan"), float("inf"), True):
        with pytest.raises(InvalidData):
            await p.set("k", "v", ttl_s=bad_ttl)
    with pytest.raises(InvalidData):
        await p.expire("k", 0)
    assert not await p.exists("k")
    await p.set("plain", "v")
    with pytest.raises(InvalidData):  # WRONGTYPE: a string read as a hash
        await p.hgetall("plain")
    assert await p.get("plain") == "v"


async def test_expired_key_names_arrive(kit: Kit) -> None:
    p = kit.presence
    await p.hset("alive:org_o1_user_t1", {"state": "disconnect"}, ttl_s=0.3)
    await p.set("alive:org_o1_user_t2", "x", ttl_s=0.2)
    await p.set("kept", "x", ttl_s=60)
    got: set[str] = set()
    with trio.fail_after(5):  # Redis reports expiry ~70-100 ms late
        while len(got) < 2:
            name = await kit.expirations.receive()
            if name != RESYNC:
                got.add(name)
    assert got == {"alive:org_o1_user_t1", "alive:org_o1_user_t2"}
    assert not await p.exists("alive:org_o1_user_t1")
    assert await p.exists("kept")


async def test_reconnect_before_expiry_keeps_the_key(kit: Kit) -> None:
    """PROTOCOL §2: a teacher back within the grace period clears the TTL."""
    p = kit.presence
    await p.hset("alive:org_o_user_t", {"state": "disconnect"}, ttl_s=0.3)
    await p.hset("alive:org_o_user_t", {"state": "connect"})
    await p.persist("alive:org_o_user_t")
    await trio.sleep(0.6)
    assert await p.hgetall("alive:org_o_user_t") == {"state": "connect"}
    with trio.move_on_after(0.3):
        name = await kit.expirations.receive()
        pytest.fail(f"unexpected expiry of {name}")


async def test_redis_keys_carry_the_prefix(
    aio_loop: object, services: Services, raw_redis: RawRedis
) -> None:
    """Other services read the seed documents' names: exactly those, after the prefix."""
    async with open_redis(services.config, services) as stores:
        await stores.presence.hset("lesson_seat_l9", {"1": "s1", "2": ""}, ttl_s=86400)
        await stores.presence.set("cooldown:org_o_user_u", "1", ttl_s=300)
    prefix = services.config.redis.key_prefix
    raw: dict[Any, Any] = await raw_redis("HGETALL", f"{prefix}lesson_seat_l9")
    assert raw == {b"1": b"s1", b"2": b""}
    assert await raw_redis("GET", f"{prefix}cooldown:org_o_user_u") == b"1"
    assert 299_000 < await raw_redis("PTTL", f"{prefix}cooldown:org_o_user_u") <= 300_000



async def test_errors_in_the_body_come_out_unwrapped(
    aio_loop: object, services: Services, tmp_path: Path
) -> None:
    """The stores run background tasks, yet a caller's error is not an ExceptionGroup."""

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with open_redis(services.config, services):
            raise Boom
    embedded = make_services(make_config(tmp_path / "embedded"))
    with pytest.raises(Boom):
        async with open_embedded_keys(embedded.config, embedded):
            raise Boom


async def test_scan_treats_the_prefix_literally(
    aio_loop: object, state_dir: Path, redis_prefix: str, raw_redis: RawRedis
) -> None:
    """A prefix with glob characters must not match other prefixes' keys."""
    tricky = redis_prefix + "[ab]*?:"
    neighbour = redis_prefix + "a-other:"
    await raw_redis("SET", neighbour + "alive:x", "1")
    await raw_redis("SET", redis_prefix + "b" + "zz:alive:y", "1")
    services = make_services(redis_config(state_dir, tricky))
    async with open_redis(services.config, services) as stores:
        await stores.presence.set("alive:mine", "1")
        assert await stores.presence.scan("alive:*") == ["alive:mine"]
    await raw_redis("DEL", tricky + "alive:mine")


async def test_hset_many_writes_together_and_tells_which_keys_existed(kit: Kit) -> None:
    p = kit.presence
    await p.hset("u2", {"sid": "old"})
    existed = await p.hset_many([
        HashWrite("lesson_student_l1", {"u2": "s2"}, ttl_s=86400),
        HashWrite("u2", {"sid": "s2", "lesson_id": "l1"}, ttl_s=86400),
        HashWrite("lesson_seat_l1", {"3": "u2"}),
        HashWrite("lesson_seat_l1", {"4": "u3"}),  # the same key again: it exists by then
    ])
    assert existed == [False, True, False, True]
    assert await p.hgetall("u2") == {"sid": "s2", "lesson_id": "l1"}
    assert await p.hgetall("lesson_seat_l1") == {"3": "u2", "4": "u3"}
    ttl = await p.ttl("lesson_student_l1")
    assert ttl is not None
    assert 86000 < ttl <= 86400
    assert await p.ttl("lesson_seat_l1") is None
    assert await p.hset_many([]) == []


async def test_hset_many_refuses_bad_input_before_writing_anything(kit: Kit) -> None:
    p = kit.presence
    for bad in (HashWrite("ok", {"a": 1}),  # type: ignore[dict-item]
                HashWrite("x" * 2000, {"a": "b"}),
                HashWrite("ok", {"a": "b"}, ttl_s=-1)):
        with pytest.raises(InvalidData):
            await p.hset_many([HashWrite("first", {"f": "v"}), bad])
        assert not await p.exists("first")
    await p.set("plain", "a string")
    with pytest.raises(InvalidData):
        await p.hset_many([HashWrite("plain", {"f": "v"})])
    assert await p.get("plain") == "a string"


async def test_hset_many_defaults_fill_only_missing_fields(kit: Kit) -> None:
    p = kit.presence
    empty = {"1": "", "2": "", "3": ""}
    # Two first joins arriving together: neither wipes the other's seat.
    await p.hset_many([HashWrite("lesson_seat_l2", {"1": "u1"}, defaults=empty)])
    await p.hset_many([HashWrite("lesson_seat_l2", {"3": "u3"}, defaults=empty)])
    assert await p.hgetall("lesson_seat_l2") == {"1": "u1", "2": "", "3": "u3"}
    with pytest.raises(InvalidData):
        await p.hset_many([HashWrite("lesson_seat_l3", {}, defaults={"1": None})])  # type: ignore[dict-item]
    assert not await p.exists("lesson_seat_l3")
