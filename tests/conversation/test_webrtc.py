"""Two real WebRTC peers (aiortc, in their own processes) signal through the daemon.

They exchange the offer, the answer and trickled ICE candidates over
`/ws/conversation`, reach `connected` and pass a message over a data channel.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import make_config, start_daemon
from tests.support import http
from tests.support.node import NodeClient, start_python_client

pytestmark = pytest.mark.slow


async def result_of(client: NodeClient) -> dict[str, Any]:
    with trio.fail_after(60):
        while True:
            line = await client.next()
            assert "fail" not in line, line
            if line.get("connected"):
                return line


async def test_two_aiortc_peers_connect_through_the_daemon(nursery: trio.Nursery,
                                                           tmp_path: Path) -> None:
    daemon = await start_daemon(nursery, make_config(tmp_path / "state"))

    async def rest(method: str, path: str, user: str, body: Any = None,
                   role: str = "student") -> Any:
        reply = await http.request(method, f"{daemon.url}{path}", json=body,
                                   token=daemon.token(user, role))
        assert reply.status in (200, 201), (path, reply.status, reply.body)
        return reply.json()

    start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    slot = await rest("POST", "/timeslots", "admin", {
        "targetLanguageCode": "fr", "level": "A2", "startTime": start.isoformat(),
        "durationMinutes": 5, "minParticipants": 2, "maxParticipants": 2}, role="admin")
    for user in ("marie", "jean"):
        await rest("POST", f"/timeslots/{slot['id']}/register", user)
    await trio.sleep(max(0.0, (start - dt.datetime.now(dt.UTC)).total_seconds()) + 0.1)
    for user in ("marie", "jean"):
        await rest("POST", "/sessions/join", user, {"timeSlotId": slot["id"]})

    jean = await start_python_client(nursery, "conversation_webrtc.py", daemon.ws_url,
                                     daemon.token("jean", "student"), "jean", "marie", "answer")
    with trio.fail_after(30):  # jean's connection is in the session before marie's offer
        ready = await jean.next()
    assert ready["ready"] is True
    assert {p["userId"] for p in ready["participants"]} == {"marie", "jean"}
    marie = await start_python_client(nursery, "conversation_webrtc.py", daemon.ws_url,
                                      daemon.token("marie", "student"), "marie", "jean", "offer")
    marie_result, jean_result = await result_of(marie), await result_of(jean)
    assert marie_result["message"] == "pong from jean"
    assert jean_result["message"] == "ping from marie"
    assert marie_result["candidatesReceived"] >= 1
    assert jean_result["candidatesReceived"] >= 1
    assert await marie.wait() == 0
    assert await jean.wait() == 0
    daemon.daemon.request_shutdown()
