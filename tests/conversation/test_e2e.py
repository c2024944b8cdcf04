"""The conversation flow on the real daemon, over real connections and real clients.

Marie speaks plain JSON over `/ws/conversation` (trio-websocket), Jean is
python-socketio's AsyncClient, Pierre the npm socket.io-client; REST goes
over real HTTP on the same port. Real time (a slot 3 s ahead).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import make_config, start_daemon
from tests.conversation.wire import JsonPeer
from tests.support import http
from tests.support.node import NodeClient, start_node, start_python_client

pytestmark = pytest.mark.slow


async def until(client: NodeClient, predicate: Any, seen: list[dict[str, Any]]
                ) -> dict[str, Any]:
    with trio.fail_after(20):
        while True:
            line = await client.next()
            assert "fail" not in line, line
            seen.append(line)
            if predicate(line):
                return line


def event(name: str, **match: Any) -> Any:
    def check(line: dict[str, Any]) -> bool:
        payload = line.get("payload") or {}
        return line.get("event") == name and all(payload.get(k) == v for k, v in match.items())

    return check


async def test_flow_over_json_python_socketio_and_npm_clients(nursery: trio.Nursery,
                                                             tmp_path: Path) -> None:
    config = make_config(tmp_path / "state", limits={"max_sdp_bytes": 8 * 1024},
                         conversation={"reminder_lead_s": 1, "grace_period_s": 30})
    daemon = await start_daemon(nursery, config)
    url, ws = daemon.url, daemon.ws_url

    async def rest(method: str, path: str, user: str, body: Any = None,
                   role: str = "student") -> Any:
        reply = await http.request(method, f"{url}{path}", json=body,
                                   token=daemon.token(user, role))
        assert reply.status in (200, 201), (path, reply.status, reply.body)
        return reply.json()

    marie = await JsonPeer.open(nursery, ws, daemon.token("marie", "student"))
    jean = await start_python_client(nursery, "conversation_peer.py", url,
                                     daemon.token("jean", "student"), "jean")
    pierre = await start_node(nursery, "conversation_peer.js", url,
                              daemon.token("pierre", "student"), "pierre")
    jean_seen: list[dict[str, Any]] = []
    pierre_seen: list[dict[str, Any]] = []
    await until(jean, lambda line: line.get("connected") is True, jean_seen)
    await until(pierre, lambda line: line.get("connected") is True, pierre_seen)

    start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
    slot = await rest("POST", "/timeslots", "admin", {
        "targetLanguageCode": "en", "level": "B1", "startTime": start.isoformat(),
        "durationMinutes": 1, "minParticipants": 2, "maxParticipants": 8}, role="admin")
    for user in ("marie", "jean", "pierre"):
        assert await rest("POST", f"/timeslots/{slot['id']}/register", user) == {
            "status": "registered"}

    # Reminded one second before the start, on all three framings/clients.
    await marie.wait_for(lambda: marie.named("reminder"))
    assert marie.named("reminder")[0]["timeSlotId"] == slot["id"]
    await until(jean, event("reminder", timeSlotId=slot["id"]), jean_seen)
    await until(pierre, event("reminder", timeSlotId=slot["id"]), pierre_seen)

    await trio.sleep(max(0.0, (start - dt.datetime.now(dt.UTC)).total_seconds()) + 0.2)
    joined = await rest("POST", "/sessions/join", "marie", {"timeSlotId": slot["id"]})
    assert joined["status"] == "waiting"
    session = joined["sessionId"]
    assert (await rest("POST", "/sessions/join", "jean", {"timeSlotId": slot["id"]}))[
        "status"] == "active"
    await until(jean, event("session-started", sessionId=session), jean_seen)
    await rest("POST", "/sessions/join", "pierre", {"timeSlotId": slot["id"]})
    await until(jean, lambda line: line.get("event") == "participant-joined"
                and line["payload"]["user"]["userId"] == "pierre", jean_seen)
    await marie.wait_for(lambda: len(marie.named("participant-joined")) == 2)
    assert [e["user"]["userId"] for e in marie.named("participant-joined")] == ["jean", "pierre"]
    assert [e["sessionId"] for e in marie.named("session-started")] == [session]

    # A second connection of a participant (Socket.IO, after the join) gets session-state.
    for starter, script in ((start_node, "conversation_peer.js"),
                            (start_python_client, "conversation_peer.py")):
        late = await starter(nursery, script, url, daemon.token("pierre", "student"), "pierre")
        late_seen: list[dict[str, Any]] = []
        state = await until(late, event("session-state", sessionId=session), late_seen)
        assert [p["userId"] for p in state["payload"]["participants"]] == [
            "marie", "jean", "pierre"]
        assert state["payload"]["status"] == "active"
        late.process.kill()
        await late.wait()

    # Signalling: Marie offers to each; their clients answer through the daemon.
    for peer, seen, name in ((jean, jean_seen, "jean"), (pierre, pierre_seen, "pierre")):
        reply = await marie.call("offer", toUserId=name, sdp=f"offer-to-{name}",
                                 fromUserId="forged")
        assert reply["status"] == "SUCCESS"
        # Pierre's killed extra connections are kept for the recovery window: counted too.
        assert reply["data"]["delivered"] == (1 if name == "jean" else 3)
        offer = await until(peer, event("offer", fromUserId="marie"), seen)
        assert offer["payload"]["sdp"] == f"offer-to-{name}"
        answered = await until(peer, lambda line: "answered" in line, seen)
        assert answered["answered"] == {"status": "SUCCESS", "data": {"delivered": 1}}
        await marie.wait_for(lambda name=name: any(
            a["fromUserId"] == name for a in marie.named("answer")))
    assert sorted(a["sdp"] for a in marie.named("answer")) == [
        "answer-from-jean", "answer-from-pierre"]
    refused = await marie.call("offer", toUserId="olga", sdp="v=0")
    assert refused["status"] == "ERROR"
    assert refused["data"]["code"] == "not_found"
    too_big = await marie.call("offer", toUserId="jean", sdp="x" * (20 * 1024))
    assert too_big["status"] == "ERROR"
    assert too_big["data"]["code"] == "payload_too_large"

    # Jean turns his camera off: Marie and Pierre are told.
    media = await rest("PATCH", "/sessions/current/media", "jean", {"cameraEnabled": False})
    assert media["cameraEnabled"] is False
    await marie.wait_for(lambda: marie.named("media-state-changed"))
    assert marie.named("media-state-changed")[0]["userId"] == "jean"
    await until(pierre, event("media-state-changed", userId="jean", cameraEnabled=False),
                pierre_seen)
    assert not any(line.get("event") == "media-state-changed" for line in jean_seen)

    # Pierre leaves.
    assert await rest("POST", f"/sessions/{session}/leave", "pierre") == {"status": "left"}
    await marie.wait_for(lambda: marie.named("participant-left"))
    assert marie.named("participant-left")[0]["userId"] == "pierre"
    view = await rest("GET", f"/sessions/{session}", "marie")
    assert view["status"] == "active"
    # Clients go first, then the daemon drains.
    await marie.ws.aclose()
    for client in (jean, pierre):
        client.process.kill()
        await client.wait()
    daemon.daemon.request_shutdown()


async def test_grace_expiry_reaches_a_socketio_client(nursery: trio.Nursery,
                                                      tmp_path: Path) -> None:
    config = make_config(tmp_path / "state", conversation={"grace_period_s": 1})
    daemon = await start_daemon(nursery, config)
    start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)
    created = await http.request("POST", f"{daemon.url}/timeslots",
                                 token=daemon.token("admin", "admin"), json={
        "targetLanguageCode": "es", "level": "B2", "startTime": start.isoformat(),
        "durationMinutes": 10, "minParticipants": 2, "maxParticipants": 3})
    assert created.status == 201, created.body
    slot = created.json()["id"]
    marie_token = daemon.token("marie", "student")
    assert (await http.request("POST", f"{daemon.url}/timeslots/{slot}/register",
                               token=marie_token)).status == 200
    await trio.sleep(max(0.0, (start - dt.datetime.now(dt.UTC)).total_seconds()) + 0.1)
    joined = await http.request("POST", f"{daemon.url}/sessions/join", token=marie_token,
                                json={"timeSlotId": slot})
    assert joined.status == 200, joined.body
    session = joined.json()["sessionId"]
    marie = await start_node(nursery, "conversation_peer.js", daemon.url, marie_token, "marie")
    seen: list[dict[str, Any]] = []
    state = await until(marie, event("session-state", sessionId=session), seen)
    assert state["payload"]["status"] == "waiting"
    ended = await until(marie, event("session-ended", sessionId=session), seen)
    assert ended["payload"]["reason"] == "not_enough_participants"
    marie.process.kill()
    await marie.wait()
    daemon.daemon.request_shutdown()
