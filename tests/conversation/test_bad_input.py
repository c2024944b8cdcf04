"""Bad input gets a clear error and changes nothing (PROTOCOL.md §1c, §4 rules)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pratico_daemon.errors import AppError
from tests.conversation.support import (
    Bed,
    at,
    backend,
    bed,
    join,
    make_slot,
    register,
    sleep_until,
)

SLOT = {"targetLanguageCode": "en", "level": "B1", "startTime": at(20),
        "durationMinutes": 30, "minParticipants": 2, "maxParticipants": 8}


@pytest.fixture
async def b(tmp_path: Path) -> AsyncIterator[Bed]:
    async with backend("embedded", tmp_path / "state") as (repo, bus), \
            bed(repo, bus, tmp_path / "state") as running:
        yield running


async def error(b: Bed, method: str, path: str, user: str = "admin", **kw: Any) -> tuple[int, str]:
    status, body = await b.rest(method, path, user, **kw)
    assert body is not None
    assert set(body) == {"error"}, body
    return status, body["error"]["code"]


async def test_slot_in_the_past_and_fifty_participants(b: Bed, autojump_clock: Any) -> None:
    assert await error(b, "POST", "/timeslots", json={**SLOT, "startTime": at(-1)}) == (
        400, "invalid_payload")
    assert await error(b, "POST", "/timeslots", json={**SLOT, "maxParticipants": 50}) == (
        400, "invalid_payload")
    assert await error(b, "POST", "/timeslots", json={**SLOT, "recurrence": "FREQ=HOURLY"}) == (
        400, "invalid_payload")
    assert await error(b, "POST", "/timeslots", raw=b"{not json") == (400, "invalid_payload")
    assert await error(b, "POST", "/timeslots", "marie", json=SLOT) == (403, "forbidden")
    _, listing = await b.rest("GET", "/timeslots", "marie")
    assert listing == {"items": [], "next": None}


async def test_a_rule_that_never_ends_is_bounded_and_extended(
        b: Bed, autojump_clock: Any) -> None:
    status, created = await b.rest("POST", "/timeslots",
                                   json={**SLOT, "recurrence": "RRULE:FREQ=DAILY"})
    assert status == 201
    assert len(created["slots"]) == 14  # conversation.horizon_days ahead, no further
    assert {s["seriesId"] for s in created["slots"]} == {created["seriesId"]}
    # Three days later the scheduler has kept the horizon 14 days ahead.
    await sleep_until(3 * 24 * 60 + 1, b.service.clock)
    _, page = await b.rest("GET", "/timeslots?from=2030-01-01T00:00:00Z&limit=100", "marie")
    starts = [s["startTime"] for s in page["items"]]
    assert len(starts) == 17
    assert starts[-1] == "2030-01-23T09:20:00Z"


async def test_listing_pages_with_a_cursor(b: Bed, autojump_clock: Any) -> None:
    ids = [await make_slot(b, start=20 + i) for i in range(3)]
    _, first = await b.rest("GET", "/timeslots?limit=2", "marie")
    assert [s["id"] for s in first["items"]] == ids[:2]
    _, second = await b.rest("GET", f"/timeslots?limit=2&cursor={first['next']}", "marie")
    assert [s["id"] for s in second["items"]] == ids[2:]
    assert second["next"] is None
    assert await error(b, "GET", "/timeslots?cursor=garbage!", "marie") == (
        400, "invalid_payload")
    assert await error(b, "GET", "/timeslots?limit=0", "marie") == (400, "invalid_payload")
    assert await error(b, "GET", "/timeslots?from=tomorrow", "marie") == (400, "invalid_payload")


async def test_join_before_the_start_and_other_refusals(b: Bed, autojump_clock: Any) -> None:
    slot = await make_slot(b)
    await register(b, slot, "marie")
    assert await error(b, "POST", "/sessions/join", "marie", json={"timeSlotId": slot}) == (
        409, "not_started")
    assert await error(b, "POST", "/sessions/join", "jean", json={"timeSlotId": slot}) == (
        403, "forbidden")
    assert await error(b, "POST", "/sessions/join", "marie", json={"timeSlotId": "nope"}) == (
        404, "not_found")
    assert await error(b, "POST", "/sessions/join", "marie", json={"timeSlotId": 7}) == (
        400, "invalid_payload")
    assert await error(b, "POST", "/sessions/join", "marie", json={}) == (400, "invalid_payload")
    assert await error(b, "POST", "/timeslots/nope/register", "marie") == (404, "not_found")
    assert await error(b, "PATCH", "/sessions/current/media", "marie",
                       json={"cameraEnabled": False}) == (404, "not_found")
    assert await error(b, "PATCH", "/sessions/current/media", "marie",
                       json={"cameraEnabled": "off"}) == (400, "invalid_payload")
    assert await error(b, "GET", "/sessions/6c1f1a5e-8d7b-4a57-9b7e-3f1d5a1e2b3c", "marie") == (
        404, "not_found")
    # After the end: joining and registering are refused.
    await sleep_until(51, b.service.clock)
    assert await error(b, "POST", "/sessions/join", "marie", json={"timeSlotId": slot}) == (
        409, "session_ended")
    assert await error(b, "POST", f"/timeslots/{slot}/register", "jean") == (
        409, "session_ended")


async def test_signalling_refusals(b: Bed, autojump_clock: Any) -> None:
    one = await make_slot(b)
    other = await make_slot(b)
    await register(b, one, "marie", "jean")
    await register(b, other, "pierre", "paul")
    marie, jean, pierre = [await b.connect(u) for u in ("marie", "jean", "pierre")]
    outsider = await b.connect("olga")

    async def refused(client: Any, name: str, payload: dict[str, Any]) -> str:
        with pytest.raises(AppError) as caught:
            await b.signal(client, name, payload)
        return caught.value.code

    assert await refused(outsider, "offer", {"toUserId": "marie", "sdp": "v=0"}) == "not_found"
    await sleep_until(20.5, b.service.clock)
    for user in ("marie", "jean"):
        await join(b, one, user)
    for user in ("pierre", "paul"):
        await join(b, other, user)
    # An offer to another session's user is refused and delivered nowhere.
    assert await refused(marie, "offer", {"toUserId": "pierre", "sdp": "v=0"}) == "not_found"
    assert pierre.of("offer") == []
    assert await refused(marie, "offer", {"toUserId": "marie", "sdp": "v=0"}) == "not_found"
    # An SDP of 1 MB, a candidate of the wrong type, missing fields.
    big = "a=" + "x" * (1024 * 1024)
    assert await refused(marie, "offer", {"toUserId": "jean", "sdp": big}) == "payload_too_large"
    assert await refused(marie, "answer", {"toUserId": "jean", "sdp": 42}) == "invalid_payload"
    assert await refused(marie, "offer", {"sdp": "v=0"}) == "invalid_payload"
    assert await refused(marie, "ice-candidate", {"toUserId": "jean", "candidate": 5}) == (
        "invalid_payload")
    assert await refused(marie, "ice-candidate",
                         {"toUserId": "jean", "candidate": {"candidate": "x" * 10000}}) == (
        "payload_too_large")
    assert jean.of("offer") == jean.of("answer") == jean.of("ice-candidate") == []
    # The session is unharmed: a good offer still goes through.
    await b.signal(marie, "offer", {"toUserId": "jean", "sdp": "v=0"})
    assert jean.of("offer") == [{"toUserId": "jean", "sdp": "v=0", "fromUserId": "marie"}]


async def test_a_connection_without_a_token_is_refused(b: Bed, autojump_clock: Any) -> None:
    from pratico_daemon.session.namespace import Identity
    from tests.conversation.support import FakeClient

    anonymous = FakeClient("x")
    anonymous.identity = Identity(None)
    with pytest.raises(AppError) as caught:
        await b.namespace.connect(anonymous, {})
    assert caught.value.code == "unauthorized"
    client = b.app.test_client()
    response = await client.get("/timeslots")
    assert response.status_code == 401


async def test_what_postgres_refuses_is_a_400_not_a_500(tmp_path: Path) -> None:
    import uuid

    from tests.conversation.support import postgres_database

    async with postgres_database() as dsn, \
            backend("production", tmp_path / "state", dsn, f"t{uuid.uuid4().hex[:8]}:") as (
                repo, bus), bed(repo, bus, tmp_path / "state") as b:
        # PostgreSQL text cannot hold NUL; SQLite can: the store's refusal is the client's error.
        assert await error(b, "POST", "/timeslots", json={**SLOT, "level": "B\u00001"}) == (
            400, "invalid_payload")
        assert await error(b, "GET", "/timeslots?level=B%001", "marie") == (
            400, "invalid_payload")
        assert await error(b, "POST", "/timeslots",
                           json={**SLOT, "startTime": "9999-12-31T23:59:59-01:00"}) == (
            400, "invalid_payload")
        _, listing = await b.rest("GET", "/timeslots", "marie")
        assert listing["items"] == []
