"""kill -9 during an open quiz, restart: the room, scores and acked answers are back,
and the quiz still closes at its original deadline (the real daemon, Redis + Postgres)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import trio

from pratico_daemon.auth import Authenticator
from tests.conftest import make_config
from tests.pratico.wire import JsonPeer
from tests.support import http
from tests.support.process import daemon_process, write_config
from tests.support.redis import REDIS_URL

pytestmark = pytest.mark.slow
TIME_LIMIT_S = 8
QUIZ = {"quiz_id": "crash-quiz", "time_limit_s": TIME_LIMIT_S, "questions": [
    {"id": "q1", "text": "?", "choices": ["a", "b"], "correct": 0}]}


async def test_kill_9_during_an_open_quiz(nursery: trio.Nursery, tmp_path: Path,
                                          pg_dsn: str, redis_prefix: str,
                                          raw_redis: object) -> None:
    config_file = write_config(tmp_path / "pratico.toml", tmp_path / "state",
                               redis={"url": REDIS_URL, "key_prefix": redis_prefix},
                               postgres={"dsn": pg_dsn})
    auth = Authenticator.from_config(make_config(tmp_path / "unused"))
    trainer_token = auth.mint("trainer1", "teacher", "org1")

    async with daemon_process(config_file) as first:
        created = await http.request("POST", f"{first.url}/rooms", token=trainer_token, json={
            "capsule_id": "cap", "title": "Crash course", "capsule_snapshot": {"pages": 2}})
        assert created.status == 201, created.body
        room = created.json()
        trainer = await JsonPeer.open(nursery, first.ws_url, trainer_token)
        await trainer.ok("join", room=room["name"])
        await trainer.ok("set_page", page=7)
        guests, joined = [], []
        for i in range(5):
            peer = await JsonPeer.open(nursery, first.ws_url)
            joined.append(await peer.ok("join", room=room["name"], display_name=f"P{i}"))
            guests.append(peer)
        launched = await trainer.ok("launch_quiz", **QUIZ)
        deadline = dt.datetime.fromisoformat(launched["deadline"])
        for i in range(4):  # P4 does not answer before the crash
            reply = await guests[i].ok("answer_quiz", quiz_id="crash-quiz", question_id="q1",
                                       choice=i % 2)
            assert reply["accepted"] is True
        first.process.kill()  # SIGKILL right after the last ack: no drain, no flush
        assert await first.wait_exit(10) == -9

    async with daemon_process(config_file) as second:
        assert dt.datetime.now(dt.UTC) < deadline, "restart took longer than the quiz"
        resolved = await http.get(f"{second.url}/r/{room['name']}")
        assert resolved.json()["id"] == room["id"]
        back = []
        for i in range(5):
            peer = await JsonPeer.open(nursery, second.ws_url)
            reply = await peer.ok("join", room=room["name"], guest_token=joined[i]["guest_token"])
            assert reply["participant_id"] == joined[i]["participant_id"]
            back.append(peer)
        state = reply["state"]
        assert state["page"] == 7
        assert state["quiz"]["open"] is True
        assert dt.datetime.fromisoformat(state["quiz"]["deadline"]) == deadline
        assert "correct" not in state["quiz"]["questions"][0]
        for i in range(4):  # every acknowledged answer came back
            again = await back[i].call("answer_quiz", quiz_id="crash-quiz", question_id="q1",
                                       choice=0)
            assert again["data"]["code"] == "conflict", i
        await back[4].ok("answer_quiz", quiz_id="crash-quiz", question_id="q1", choice=0)
        trainer = await JsonPeer.open(nursery, second.ws_url, trainer_token)
        assert (await trainer.ok("join", room=room["name"]))["role"] == "trainer"

        await trainer.wait_for(lambda: trainer.named("quiz_closed"), seconds=TIME_LIMIT_S + 5)
        closed_at = dt.datetime.now(dt.UTC)
        assert -0.2 < (closed_at - deadline).total_seconds() < 1.5
        closed = trainer.named("quiz_closed")[0]
        assert closed["by"] == "deadline"
        assert closed["results"][0]["counts"] == [3, 2]  # P0, P2, P4 chose a; P1, P3 b
        pids = [j["participant_id"] for j in joined]
        assert closed["scores"] == {pids[0]: 1, pids[1]: 0, pids[2]: 1, pids[3]: 0, pids[4]: 1}
        await back[0].wait_for(lambda: back[0].named("scores_updated"))
        assert back[0].named("scores_updated")[0]["scores"][pids[0]] == 1

        # The durable record agrees: five answers, each once.
        events = await http.get(f"{second.url}/rooms/{room['id']}/events?limit=1000",
                                token=trainer_token)
        types = [e["type"] for e in events.json()["items"]]
        assert types.count("quiz_answered") == 5
        assert types.count("session_started") == 1
