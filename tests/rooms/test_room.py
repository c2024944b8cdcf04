from __future__ import annotations

import pytest
import trio

from pratico_daemon.errors import AppError
from pratico_daemon.metrics import Metrics
from pratico_daemon.rooms import broadcast as broadcast_module
from pratico_daemon.rooms.broadcast import Broadcast, Framing, register_encoder
from pratico_daemon.rooms.registry import RoomRegistry
from pratico_daemon.rooms.room import Room, RoomState

ENCODED: list[tuple[Framing, str]] = []


def _counting_encoder(framing: Framing):
    def encode(b: Broadcast):
        ENCODED.append((framing, b.name))
        return f"{framing.value}:{b.namespace}:{b.name}:{sorted(b.payload.items())}:{b.offset}"

    return encode


class FakeMember:
    """A member whose connection is a list: what `deliver` would have sent."""

    def __init__(self, member_id: str, framing: Framing) -> None:
        self.member_id = member_id
        self.framing = framing
        self.sent: list[str] = []

    def deliver(self, broadcast: Broadcast) -> None:
        self.sent.append(broadcast.frame(self.framing))


@pytest.fixture(autouse=True)
def _encoders():
    """Counting encoders for these tests only; the real ones are put back after."""
    saved = dict(broadcast_module._ENCODERS)
    for framing in Framing:
        register_encoder(framing, _counting_encoder(framing))
    ENCODED.clear()
    yield
    broadcast_module._ENCODERS.clear()
    broadcast_module._ENCODERS.update(saved)


@pytest.fixture
async def registry(nursery):
    return await nursery.start(RoomRegistry(Metrics()).run)


def new_room(room_id: str = "r1", **kw) -> Room:
    return Room(room_id, "test", "/pratico", state={"n": 0}, **kw)


async def test_commands_run_one_at_a_time_in_order(registry):
    room = await registry.open("r1", new_room)
    seen = []

    async def slow_increment(r: Room) -> int:
        before = r.state["n"]
        await trio.sleep(0.001)
        r.state["n"] = before + 1
        seen.append(before)
        return r.state["n"]

    async with trio.open_nursery() as n:
        for _ in range(20):
            n.start_soon(room.call, slow_increment)
    assert room.state["n"] == 20
    assert seen == list(range(20))


async def test_app_error_answers_caller_and_room_keeps_running(registry):
    room = await registry.open("r1", new_room)

    def refuse(r: Room) -> None:
        raise AppError("conflict", "already answered")

    def crash(r: Room) -> None:
        raise ZeroDivisionError

    with pytest.raises(AppError) as info:
        await room.call(refuse)
    assert info.value.code == "conflict"
    with pytest.raises(AppError) as info:
        await room.call(crash)
    assert info.value.code == "internal"
    assert await room.call(lambda r: "alive") == "alive"
    assert room.lifecycle is RoomState.ACTIVE


async def test_broadcast_is_encoded_once_per_framing(registry):
    room = await registry.open("r1", new_room)
    members = [FakeMember(f"m{i}", Framing.SOCKETIO_WS) for i in range(50)]
    members += [FakeMember(f"j{i}", Framing.JSON_WS) for i in range(50)]

    def fill(r: Room) -> None:
        for m in members:
            r.join(m)
        r.broadcast("page_changed", {"page": 3}, exclude=["m0"])

    await room.call(fill)
    assert sorted(f.value for f, _ in ENCODED) == ["json-ws", "socketio-ws"]
    assert members[0].sent == []
    assert all(m.sent == [members[1].sent[0]] for m in members[1:50])
    assert all(m.sent == [members[50].sent[0]] for m in members[50:])


async def test_room_full(registry):
    room = await registry.open("r1", lambda: new_room(max_members=2))

    def fill(r: Room) -> None:
        for i in range(3):
            r.join(FakeMember(f"m{i}", Framing.JSON_WS))

    with pytest.raises(AppError) as info:
        await room.call(fill)
    assert info.value.code == "room_full"
    assert await room.call(lambda r: len(r.members)) == 2


async def test_end_refuses_later_commands_and_unregisters(registry):
    room = await registry.open("r1", new_room)
    await room.call(lambda r: r.end())
    await room.wait_ended()
    assert registry.get("r1") is None
    with pytest.raises(AppError) as info:
        await room.call(lambda r: None)
    assert info.value.code == "not_found"


async def test_concurrent_open_returns_the_same_room(registry):
    rooms = []
    created = []

    def factory() -> Room:
        created.append(1)
        return new_room("same")

    async def open_one() -> None:
        rooms.append(await registry.open("same", factory))

    async with trio.open_nursery() as n:
        for _ in range(10):
            n.start_soon(open_one)
    assert len(created) == 1
    assert all(r is rooms[0] for r in rooms)


async def test_sub_task_timer_changes_state_through_the_inbox(registry, autojump_clock):
    room = await registry.open("r1", new_room)

    async def deadline(r: Room) -> None:
        await trio.sleep(30)
        await r.call(lambda r: r.state.update(closed=True))

    await room.call(lambda r: r.nursery.start_soon(deadline, r))
    await trio.sleep(29)
    assert "closed" not in room.state
    await trio.sleep(2)
    assert room.state["closed"] is True


async def test_a_crashing_room_does_not_take_down_its_siblings(registry):
    healthy = await registry.open("ok", lambda: new_room("ok"))
    doomed = await registry.open("bad", lambda: new_room("bad"))

    async def explode(r: Room) -> None:
        raise RuntimeError("boom")

    # A sub-task failure ends that room only.
    await doomed.call(lambda r: r.nursery.start_soon(explode, r))
    await doomed.wait_ended()
    assert registry.get("bad") is None
    assert await healthy.call(lambda r: "still here") == "still here"
