"""A whole session over real connections: a trainer and 30 participants on three clients.

12 participants use the npm socket.io-client (half WebSocket, half polling then
upgrade), 6 use python-socketio's AsyncClient, 12 (and the trainer) speak plain
JSON over trio-websocket. REST goes over real HTTP on the same port.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.pratico.wire import JsonPeer, Server, start_server
from tests.support import http
from tests.support.node import NodeClient, start_node, start_python_client

QUIZ = {"quiz_id": "quiz-1", "time_limit_s": 3, "questions": [
    {"id": "q1", "text": "Le vecteur nul est-il libre ?", "choices": ["non", "oui"],
     "correct": 0}]}

pytestmark = pytest.mark.slow


async def read_joined(client: NodeClient, count: int) -> list[dict[str, Any]]:
    return [await client.next() for _ in range(count)]


async def read_summaries(client: NodeClient, count: int) -> list[dict[str, Any]]:
    out = []
    while len(out) < count:
        line = await client.next()
        assert "fail" not in line, line
        if "summary" in line:
            out.append(line["summary"])
    return out


async def test_session_end_to_end_with_real_clients(nursery: trio.Nursery,
                                                    tmp_path: Path) -> None:
    server = await start_server(nursery, tmp_path)
    created = await http.request("POST", f"{server.http}/rooms", token=server.token("trainer1"),
                                 json={"capsule_id": "cap-9", "title": "Algèbre linéaire",
                                       "capsule_snapshot": {"document": {}},
                                       "params": {"navigation_mode": "trainer"}})
    assert created.status == 201, created.body
    room = created.json()
    name = room["name"]
    assert name == "algebre-lineaire"
    resolved = await http.get(f"{server.http}/r/{name}")
    assert resolved.json()["id"] == room["id"]

    trainer = await JsonPeer.open(nursery, server.ws, server.token("trainer1"))
    assert (await trainer.ok("join", room=name))["role"] == "trainer"

    node = await start_node(nursery, "pratico_participants.js", server.http, name, "12", "node")
    python = await start_python_client(nursery, "pratico_participants.py", server.http, name,
                                       "6", "py")
    json_peers: list[JsonPeer] = []
    json_joined: list[dict[str, Any]] = []
    for i in range(12):
        peer = await JsonPeer.open(nursery, server.ws)
        json_joined.append(await peer.ok("join", room=name, display_name=f"json{i}"))
        json_peers.append(peer)
    node_joined = await read_joined(node, 12)
    python_joined = await read_joined(python, 6)
    assert {j["transport"] for j in node_joined} == {"websocket", "polling"}
    assert len({j["joined"] for j in python_joined}) == 6
    await trainer.wait_for(lambda: len(trainer.named("participant_joined")) == 30)
    state = await trainer.ok("get_state")
    assert len(state["participants"]) == 31
    pids = {p["participant_id"]: p["display_name"] for p in state["participants"]}

    # Pages, trainer-led, then free.
    await trainer.ok("set_page", page=1)
    await trainer.ok("set_params", navigation_mode="free", collaboration={"draw": True})
    assert (await json_peers[0].ok("set_page", page="my-own")) == {"page": "my-own"}
    await trainer.ok("set_page", page=2)
    refused = await json_peers[1].call("launch_quiz", **QUIZ)
    assert refused["data"]["code"] == "forbidden"

    # The quiz: everyone answers at once; the deadline (3 s of real time) closes it.
    await trainer.ok("launch_quiz", **QUIZ)
    for i, peer in enumerate(json_peers):
        await peer.wait_for(lambda p=peer: p.named("quiz_launched"))
        assert "correct" not in peer.named("quiz_launched")[0]["questions"][0]
        reply = await peer.ok("answer_quiz", quiz_id="quiz-1", question_id="q1", choice=i % 2)
        assert reply["accepted"] is True
    await trainer.wait_for(lambda: trainer.named("quiz_closed"), seconds=10)
    closed = trainer.named("quiz_closed")[0]
    assert closed["by"] == "deadline"
    assert closed["results"][0]["counts"] == [15, 15]  # every i % 2, 12 + 12 + 6
    late = await json_peers[0].call("answer_quiz", quiz_id="quiz-1", question_id="q1", choice=0)
    assert late["data"]["code"] == "quiz_closed"

    # Chat from each client library (node0 and py0 chat when the quiz closes).
    await json_peers[2].ok("chat_send", text="hello from json")
    for peer in (trainer, *json_peers):
        await peer.wait_for(lambda p=peer: len(p.named("chat_message")) == 3)

    # A JSON participant reconnects as itself.
    token = json_joined[4]["guest_token"]
    await json_peers[4].close()
    await trainer.wait_for(lambda: any(
        e["participant_id"] == json_joined[4]["participant_id"] and not e["connected"]
        for e in trainer.named("participant_presence")))
    again = await JsonPeer.open(nursery, server.ws)
    back = await again.ok("join", room=name, guest_token=token)
    assert back["participant_id"] == json_joined[4]["participant_id"]
    assert back["state"]["scores"][back["participant_id"]] == 1  # json4 chose 0: right
    json_peers[4] = again

    # The end: everyone is told, then disconnected.
    assert (await trainer.ok("end_session"))["ended"] is True
    for peer in json_peers:
        await peer.wait_for(lambda p=peer: p.closed is not None)
        assert peer.named("session_ended") == [{"type": "session_ended",
                                                "room_id": room["id"], "reason": "trainer",
                                                **_offset(peer.named("session_ended"))}]
    summaries = await read_summaries(node, 12) + await read_summaries(python, 6)
    assert await node.wait() == 0
    assert await python.wait() == 0
    for s in summaries:
        assert s["pages"][:2] == [1, 2], s
        assert s["leaked_correct"] is False
        assert s["answer"]["status"] == "SUCCESS"
        assert s["second"]["data"]["code"] == "conflict"
        assert s["closed"]["results"][0]["counts"] == [15, 15]
        assert {"hello from node", "hello from py", "hello from json"} <= set(s["chats"])
        assert s["ended"] == {"room_id": room["id"], "reason": "trainer"}

    # Afterwards: room, row, chat and checkpoint gone; the report remains.
    assert server.services.rooms.get(room["id"]) is None
    repos = server.services.stores.repos
    assert await repos.rooms.get(uuid.UUID(room["id"])) is None
    assert await repos.chat.count(uuid.UUID(room["id"])) == 0
    await server.checkpointer.flush()
    assert await server.services.stores.checkpoints.get(room["id"]) is None
    assert (await http.get(f"{server.http}/r/{name}")).status == 404
    report = (await http.get(f"{server.http}/rooms/{room['id']}/report",
                             token=server.token("trainer1"))).json()
    assert len(report["participants"]) == 31
    assert report["chat_messages"] == 3
    assert report["quizzes"][0]["questions"][0]["counts"] == [15, 15]
    assert sum(report["quizzes"][0]["scores"].values()) == 15
    names = {p["display_name"] for p in report["participants"]}
    assert names == set(pids.values())
    assert all(p["left_at"] is not None for p in report["participants"])
    csv_reply = await http.get(f"{server.http}/rooms/{room['id']}/report?format=csv",
                               token=server.token("trainer1"))
    assert csv_reply.status == 200
    assert csv_reply.body.decode().count("\r\nanswer,") == 30


def _offset(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {"offset": events[0]["offset"]} if events and "offset" in events[0] else {}


_ = Server
