"""The seed's "Flux Inscription et Session", walked end to end in-process.

Marie and Jean register, are reminded 5 minutes before, join at the start,
see each other and exchange an offer and an answer; Pierre joins; Jean turns
his camera off; the slot ends after 30 minutes. The MockClock drives the
half hour; the same walk runs on the embedded store and on PostgreSQL + Redis.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from tests.conversation.support import (
    ORIGIN,
    at,
    backend,
    bed,
    postgres_database,
    sleep_until,
)


@pytest.fixture
def clock() -> trio.testing.MockClock:
    # Jumps once the run has been idle 100 ms: fast, yet a real database round
    # trip (production mode) never looks like an idle run.
    return trio.testing.MockClock(autojump_threshold=0.1)


@pytest.fixture(params=["embedded", "production"])
async def stack(request: Any, tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    if request.param == "embedded":
        async with backend("embedded", tmp_path / "state") as pair:
            yield pair
    else:
        async with postgres_database() as dsn, backend(
                "production", tmp_path / "state", dsn, f"t{uuid.uuid4().hex[:8]}:") as pair:
            yield pair


async def test_registration_and_session_flow(stack: Any, tmp_path: Path,
                                             clock: trio.testing.MockClock) -> None:
    repo, bus = stack
    async with bed(repo, bus, tmp_path / "state") as b:
        status, slot = await b.rest("POST", "/timeslots", json={
            "targetLanguageCode": "en", "level": "B1", "startTime": at(20),
            "durationMinutes": 30, "minParticipants": 2, "maxParticipants": 8})
        assert status == 201, slot
        slot_id = slot["id"]

        # Phase 1: registration.
        status, listing = await b.rest("GET", "/timeslots?language=EN&level=B1", "marie")
        assert status == 200
        assert [(s["id"], s["placesLeft"], s["registered"]) for s in listing["items"]] == [
            (slot_id, 8, False)]
        for user in ("marie", "jean", "pierre"):
            status, body = await b.rest("POST", f"/timeslots/{slot_id}/register", user)
            assert (status, body) == (200, {"status": "registered"})
        status, again = await b.rest("POST", f"/timeslots/{slot_id}/register", "marie")
        assert (status, again) == (200, {"status": "registered"})  # idempotent
        _, listing = await b.rest("GET", "/timeslots?language=en", "marie")
        assert listing["items"][0]["registeredCount"] == 3
        assert listing["items"][0]["placesLeft"] == 5
        assert listing["items"][0]["registered"] is True

        marie = await b.connect("marie")
        jean = await b.connect("jean")

        # Phase 2: 5 minutes before the slot.
        await sleep_until(14.9, b.service.clock)
        assert marie.of("reminder") == []
        await sleep_until(15.01, b.service.clock)
        assert marie.of("reminder") == [{"timeSlotId": slot_id, "startTime": at(20)}]
        assert jean.of("reminder") == [{"timeSlotId": slot_id, "startTime": at(20)}]

        # Phase 3: the slot starts; a session is waiting.
        await sleep_until(20.01, b.service.clock)
        status, joined = await b.rest("POST", "/sessions/join", "marie",
                                      json={"timeSlotId": slot_id, "recordingConsent": True})
        assert status == 200, joined
        session_id = joined["sessionId"]
        assert joined["status"] == "waiting"
        assert joined["participants"] == [
            {"userId": "marie", "cameraEnabled": True, "micEnabled": True}]
        assert joined["iceServers"] == []
        status, joined = await b.rest("POST", "/sessions/join", "jean",
                                      json={"timeSlotId": slot_id, "recordingConsent": True})
        assert status == 200
        assert joined["status"] == "active"
        assert [p["userId"] for p in joined["participants"]] == ["marie", "jean"]
        await sleep_until(20.02, b.service.clock)
        assert marie.of("participant-joined") == [
            {"user": {"userId": "jean", "cameraEnabled": True, "micEnabled": True}}]
        assert jean.of("participant-joined") == []
        assert marie.of("session-started") == [{"sessionId": session_id}]
        assert jean.of("session-started") == [{"sessionId": session_id}]

        # WebRTC signalling through the daemon, fromUserId set by the server.
        await b.signal(marie, "offer", {"toUserId": "jean", "sdp": "v=0 offer",
                                        "fromUserId": "mallory"})
        assert jean.of("offer") == [{"toUserId": "jean", "sdp": "v=0 offer",
                                     "fromUserId": "marie"}]
        await b.signal(jean, "answer", {"toUserId": "marie", "sdp": "v=0 answer"})
        assert marie.of("answer") == [{"toUserId": "marie", "sdp": "v=0 answer",
                                       "fromUserId": "jean"}]
        candidate = {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
                     "sdpMid": "0", "sdpMLineIndex": 0}
        await b.signal(marie, "ice-candidate", {"toUserId": "jean", "candidate": candidate})
        assert jean.of("ice-candidate")[0]["candidate"] == candidate

        # Pierre connects, joins; the others hear of him.
        pierre = await b.connect("pierre")
        status, joined = await b.rest("POST", "/sessions/join", "pierre",
                                      json={"timeSlotId": slot_id})
        assert status == 200
        assert [p["userId"] for p in joined["participants"]] == ["marie", "jean", "pierre"]
        await sleep_until(21, b.service.clock)
        pierre_joined = {"user": {"userId": "pierre", "cameraEnabled": True, "micEnabled": True}}
        assert pierre_joined in marie.of("participant-joined")
        assert pierre_joined in jean.of("participant-joined")
        assert pierre.of("participant-joined") == []

        # Jean turns his camera off.
        status, media = await b.rest("PATCH", "/sessions/current/media", "jean",
                                     json={"cameraEnabled": False})
        assert status == 200
        assert media["cameraEnabled"] is False
        assert media["micEnabled"] is True
        await sleep_until(22, b.service.clock)
        change = {"userId": "jean", "cameraEnabled": False, "micEnabled": True}
        assert marie.of("media-state-changed") == [change]
        assert pierre.of("media-state-changed") == [change]
        assert jean.of("media-state-changed") == []

        # The end of the slot (30 minutes).
        await sleep_until(49.9, b.service.clock)
        assert marie.of("session-ended") == []
        await sleep_until(50.01, b.service.clock)
        ended = {"sessionId": session_id, "reason": "time_expired"}
        for client in (marie, jean, pierre):
            assert client.of("session-ended") == [ended]
        status, view = await b.rest("GET", f"/sessions/{session_id}", "jean")
        assert status == 200
        assert view["status"] == "ended"
        assert view["recordingEnabled"] is True
        assert [p["userId"] for p in view["participants"]] == ["marie", "jean", "pierre"]
        assert view["startedAt"] == at(20.01)[:16] + view["startedAt"][16:]

        types = await b.published_types()
        assert types == [
            "registration.created", "registration.created", "registration.created",
            "timeslot.reminder",
            "participant.joined", "participant.joined", "session.started",
            "participant.joined", "session.ended"]
        entries = await b.published()
        assert len({e["id"] for e in entries}) == len(entries)
        reminder = orjson.loads(entries[3]["payload"])
        assert reminder["userIds"] == ["marie", "jean", "pierre"]
        ended_event = orjson.loads(entries[-1]["payload"])
        assert ended_event["reason"] == "time_expired"
        assert ended_event["participants"] == ["marie", "jean", "pierre"]
        assert b.service.clock.now() < ORIGIN.replace(hour=10)
