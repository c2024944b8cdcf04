"""Every lifecycle transition and edge, in-process on the embedded store (autojump clock)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conversation.support import (
    Bed,
    backend,
    bed,
    join,
    make_slot,
    register,
    sleep_until,
)


@pytest.fixture
async def b(tmp_path: Path) -> AsyncIterator[Bed]:
    async with backend("embedded", tmp_path / "state") as (repo, bus), \
            bed(repo, bus, tmp_path / "state", user_events_poll_s=5) as running:
        yield running


async def test_grace_expiry_with_one_participant(
    b: Bed, autojump_clock: Any
) -> None:
    slot = await make_slot(b)
    await register(b, slot, "marie", "jean")
    marie = await b.connect("marie")
    await sleep_until(20, b.service.clock)
    joined = await join(b, slot, "marie")
    assert joined["status"] == "waiting"
    await sleep_until(24.9, b.service.clock)
    assert marie.of("session-ended") == []
    await sleep_until(25.01, b.service.clock)
    assert marie.of("session-ended") == [
        {"sessionId": joined["sessionId"], "reason": "not_enough_participants"}]
    # Jean comes too late: the session is over.
    status, body = await b.rest("POST", "/sessions/join", "jean", json={"timeSlotId": slot})
    assert (status, body["error"]["code"]) == (409, "session_ended")
    _, view = await b.rest("GET", f"/sessions/{joined['sessionId']}", "marie")
    assert (view["status"], view["endReason"]) == ("ended", "not_enough_participants")
    assert "session.started" not in await b.published_types()


async def test_a_session_nobody_joins_ends_after_the_grace_period(
    b: Bed, autojump_clock: Any
) -> None:
    slot = await make_slot(b)
    await sleep_until(25.01, b.service.clock)
    entries = [e for e in await b.published() if e["type"] == "session.ended"]
    assert len(entries) == 1
    assert orjson.loads(entries[0]["payload"])["reason"] == "not_enough_participants"
    assert orjson.loads(entries[0]["payload"])["timeSlotId"] == slot


async def test_the_ninth_participant_is_refused_and_a_cancel_frees_a_place(
    b: Bed, autojump_clock: Any
) -> None:
    slot = await make_slot(b, maxParticipants=8)
    users = [f"u{i}" for i in range(1, 9)]
    await register(b, slot, *users)
    status, body = await b.rest("POST", f"/timeslots/{slot}/register", "u9")
    assert (status, body["error"]["code"]) == (409, "room_full")
    _, listing = await b.rest("GET", "/timeslots", "u9")
    assert listing["items"][0]["placesLeft"] == 0
    status, body = await b.rest("DELETE", f"/timeslots/{slot}/register", "u3")
    assert (status, body) == (200, {"status": "cancelled"})
    status, body = await b.rest("DELETE", f"/timeslots/{slot}/register", "u3")
    assert (status, body) == (200, {"status": "cancelled"})  # idempotent
    await register(b, slot, "u9")
    await sleep_until(20, b.service.clock)
    for user in [*users[:2], *users[3:], "u9"]:
        await join(b, slot, user)
    _, view = await b.rest("GET", f"/sessions/{(await join(b, slot, 'u1'))['sessionId']}", "u1")
    assert len(view["participants"]) == 8
    status, body = await b.rest("POST", "/sessions/join", "u3", json={"timeSlotId": slot})
    assert (status, body["error"]["code"]) == (403, "forbidden")


async def test_everyone_leaving_ends_an_active_session(
    b: Bed, autojump_clock: Any
) -> None:
    slot = await make_slot(b)
    await register(b, slot, "marie", "jean")
    marie, jean = await b.connect("marie"), await b.connect("jean")
    await sleep_until(21, b.service.clock)
    session = (await join(b, slot, "marie"))["sessionId"]
    assert (await join(b, slot, "jean"))["status"] == "active"
    status, body = await b.rest("POST", f"/sessions/{session}/leave", "jean")
    assert (status, body) == (200, {"status": "left"})
    await sleep_until(21.1, b.service.clock)
    assert marie.of("participant-left") == [{"userId": "jean"}]
    assert marie.of("session-ended") == []  # an Active session below the minimum stays Active
    # Jean may come back before the end, then both leave.
    await join(b, slot, "jean")
    await b.rest("POST", f"/sessions/{session}/leave", "jean")
    await b.rest("POST", f"/sessions/{session}/leave", "marie")
    await sleep_until(21.2, b.service.clock)
    _, view = await b.rest("GET", f"/sessions/{session}", "admin")
    assert (view["status"], view["endReason"]) == ("ended", "all_left")
    ended = [orjson.loads(e["payload"]) for e in await b.published()
             if e["type"] == "session.ended"]
    assert [e["reason"] for e in ended] == ["all_left"]
    # Those who left are no longer members: nobody is told twice, nothing leaks.
    assert marie.of("session-ended") == jean.of("session-ended") == []
    assert b.services.rooms.get(session) is None


async def test_cancelling_a_registration_removes_the_participant(
    b: Bed, autojump_clock: Any
) -> None:
    slot = await make_slot(b)
    await register(b, slot, "marie", "jean", "pierre")
    marie = await b.connect("marie")
    await sleep_until(20.5, b.service.clock)
    for user in ("marie", "jean", "pierre"):
        session = (await join(b, slot, user))["sessionId"]
    await b.rest("DELETE", f"/timeslots/{slot}/register", "pierre")
    await sleep_until(20.6, b.service.clock)
    assert marie.of("participant-left") == [{"userId": "pierre"}]
    _, view = await b.rest("GET", f"/sessions/{session}", "marie")
    assert {p["userId"]: p["status"] for p in view["participants"]} == {
        "marie": "joined", "jean": "joined", "pierre": "left"}


async def test_a_user_deleted_mid_session(
    b: Bed, autojump_clock: Any
) -> None:
    slot = await make_slot(b)
    later = await make_slot(b, start=24 * 60)
    await register(b, slot, "marie", "jean", "pierre")
    await register(b, later, "jean")
    marie, jean = await b.connect("marie"), await b.connect("jean")
    await sleep_until(20.5, b.service.clock)
    for user in ("marie", "jean", "pierre"):
        session = (await join(b, slot, user))["sessionId"]
    await b.bus.append("user.events", {"type": "user.deleted", "id": "evt-1",
                                       "occurredAt": "2030-01-07T09:21:00Z",
                                       "payload": orjson.dumps({"userId": "jean"}).decode()})
    await sleep_until(21, b.service.clock)
    assert marie.of("participant-left") == [{"userId": "jean"}]
    assert jean.closed == "user deleted"
    _, listing = await b.rest("GET", "/timeslots?from=2030-01-07T09:00:00Z", "jean")
    assert [(s["id"], s["registered"]) for s in listing["items"]] == [
        (slot, False), (later, False)]
    _, view = await b.rest("GET", f"/sessions/{session}", "marie")
    assert {p["userId"]: p["status"] for p in view["participants"]}["jean"] == "left"
    assert view["status"] == "active"
    types = await b.published_types()
    assert types.count("registration.cancelled") == 2
    assert types[-3:] == ["registration.cancelled", "participant.left",
                          "registration.cancelled"]
    # Handled once: the consumer acknowledged the entry.
    assert await b.bus.read_group("user.events", "conversation", "test-node") == []


async def test_one_live_session_per_user(
    b: Bed, autojump_clock: Any
) -> None:
    first = await make_slot(b)
    second = await make_slot(b, start=21)
    await register(b, first, "marie")
    await register(b, second, "marie")
    await sleep_until(22, b.service.clock)
    await join(b, first, "marie")
    status, body = await b.rest("POST", "/sessions/join", "marie", json={"timeSlotId": second})
    assert (status, body["error"]["code"]) == (409, "conflict")


async def test_a_connection_opened_before_the_join_gets_the_events(
    b: Bed, autojump_clock: Any
) -> None:
    slot = await make_slot(b)
    await register(b, slot, "marie", "jean")
    early = await b.connect("marie")
    await sleep_until(20.5, b.service.clock)
    await join(b, slot, "marie")
    await join(b, slot, "jean")
    await sleep_until(20.6, b.service.clock)
    assert early.of("participant-joined")[0]["user"]["userId"] == "jean"
    # A connection opened after the join gets the session's state at once.
    late = await b.connect("jean")
    await sleep_until(20.7, b.service.clock)
    state = late.of("session-state")
    assert [p["userId"] for p in state[0]["participants"]] == ["marie", "jean"]
    assert state[0]["status"] == "active"


async def test_malformed_user_events_are_skipped_not_fatal(
    b: Bed, autojump_clock: Any
) -> None:
    slot = await make_slot(b)
    await register(b, slot, "marie", "jean")
    for n, payload in enumerate(["not json", "[1, 2]", '{"userId": 42}', '{"userId": ""}']):
        await b.bus.append("user.events", {"type": "user.deleted", "id": f"bad-{n}",
                                           "occurredAt": "", "payload": payload})
    await b.bus.append("user.events", {"type": "user.renamed", "id": "other",
                                       "occurredAt": "", "payload": '{"userId": "marie"}'})
    await b.bus.append("user.events", {"type": "user.deleted", "id": "good",
                                       "occurredAt": "", "payload": '{"userId": "jean"}'})
    await sleep_until(1, b.service.clock)
    _, listing = await b.rest("GET", "/timeslots", "admin")
    assert listing["items"][0]["registeredCount"] == 1  # jean's gone, marie stays
    assert await b.bus.read_group("user.events", "conversation", "test-node") == []
    await make_slot(b, start=30)  # the service is still up and answering


async def test_a_recorder_counts_toward_neither_occupancy_nor_the_cap(
    b: Bed, autojump_clock: Any
) -> None:
    slot = await make_slot(b, minParticipants=2, maxParticipants=2)
    await register(b, slot, "marie", "jean")
    marie = await b.connect("marie")
    recorder = await b.connect("recorder-1")
    await sleep_until(20.5, b.service.clock)
    session = (await join(b, slot, "marie"))["sessionId"]
    await b.service.add_recorder(session, "recorder-1")
    _, view = await b.rest("GET", f"/sessions/{session}", "admin")
    assert view["status"] == "waiting"  # the recorder does not make the minimum
    assert [p["userId"] for p in view["participants"]] == ["marie"]
    joined = await join(b, slot, "jean")  # nor take the last place
    assert joined["status"] == "active"
    assert [p["userId"] for p in joined["participants"]] == ["marie", "jean"]
    assert [e["user"]["userId"] for e in marie.of("participant-joined")] == ["jean"]
    # It takes part in signalling.
    await b.signal(marie, "offer", {"toUserId": "recorder-1", "sdp": "v=0"})
    assert recorder.of("offer") == [{"toUserId": "recorder-1", "sdp": "v=0",
                                     "fromUserId": "marie"}]
    # Everyone but the recorder leaving ends the session.
    await b.rest("POST", f"/sessions/{session}/leave", "marie")
    await b.rest("POST", f"/sessions/{session}/leave", "jean")
    await sleep_until(21, b.service.clock)
    _, view = await b.rest("GET", f"/sessions/{session}", "admin")
    assert (view["status"], view["endReason"]) == ("ended", "all_left")
    assert recorder.of("session-ended") == [{"sessionId": session, "reason": "all_left"}]
