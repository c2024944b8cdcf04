"""Issue 3: SIGKILL the daemon while rooms are changing; restart; nothing acknowledged is lost.

Four Pratico rooms change at once (trainers turn pages as fast as acks come back;
guests answer a quiz, each answer acknowledged only once durable). Right before
the kill the test reads every room's checkpoint from Redis. After the restart:
every room is back at a version (and page) no older than that checkpoint, and
every acknowledged answer is in Postgres (`room_events`).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import trio

from pratico_daemon.auth import Authenticator
from tests.conftest import make_config
from tests.pratico.wire import JsonPeer
from tests.support import http
from tests.support.process import daemon_process, write_config
from tests.support.redis import REDIS_URL

pytestmark = pytest.mark.slow
ROOMS = 4
QUIZ = {"quiz_id": "kq", "questions": [
    {"id": f"q{i}", "text": "?", "choices": ["a", "b"], "correct": 0} for i in range(20)]}


async def test_sigkill_while_rooms_change(nursery: trio.Nursery, tmp_path: Path, pg_dsn: str,
                                          redis_prefix: str, raw_redis) -> None:
    config_file = write_config(tmp_path / "d.toml", tmp_path / "state",
                               redis={"url": REDIS_URL, "key_prefix": redis_prefix},
                               postgres={"dsn": pg_dsn},
                               limits={"rate_per_s": 1000, "rate_burst": 1000})
    token = Authenticator.from_config(make_config(tmp_path / "unused")).mint("t1", "teacher", "o1")
    acked_pages: dict[str, int] = {}
    acked_answers: dict[str, set[str]] = {}

    async with daemon_process(config_file) as first:
        rooms = []
        for i in range(ROOMS):
            created = await http.request("POST", f"{first.url}/rooms", token=token, json={
                "capsule_id": "c", "title": f"Room {i}", "capsule_snapshot": {}})
            assert created.status == 201, created.body
            rooms.append(created.json())
        trainers, guests = {}, {}
        for room in rooms:
            trainers[room["id"]] = trainer = await JsonPeer.open(nursery, first.ws_url, token)
            await trainer.ok("join", room=room["name"])
            await trainer.ok("launch_quiz", **QUIZ)
            guests[room["id"]] = guest = await JsonPeer.open(nursery, first.ws_url)
            await guest.ok("join", room=room["name"], display_name="G")
            acked_answers[room["id"]] = set()

        async def turn_pages(room_id: str) -> None:
            page = 0
            while True:
                page += 1
                await trainers[room_id].ok("set_page", page=page)
                acked_pages[room_id] = page

        async def answer(room_id: str) -> None:
            for q in QUIZ["questions"]:
                reply = await guests[room_id].ok("answer_quiz", quiz_id="kq",
                                                  question_id=q["id"], choice=0)
                assert reply["accepted"] is True
                acked_answers[room_id].add(q["id"])
                await trio.sleep(0.02)

        async with trio.open_nursery() as load:
            for room in rooms:
                load.start_soon(turn_pages, room["id"])
                load.start_soon(answer, room["id"])
            await trio.sleep(1.0)
            checkpointed = {}
            for room in rooms:
                stored = await raw_redis("HGET", f"{redis_prefix}pratico:checkpoint:{room['id']}",
                                         "d")
                document = orjson.loads(stored)
                checkpointed[room["id"]] = (document["version"], document["state"]["page"])
            first.process.kill()
            load.cancel_scope.cancel()
        assert await first.wait_exit(10) == -9

    assert all(page > 0 for _, page in checkpointed.values())
    async with daemon_process(config_file) as second:
        for room in rooms:
            version_before, page_before = checkpointed[room["id"]]
            trainer = await JsonPeer.open(nursery, second.ws_url, token)
            state = (await trainer.ok("join", room=room["name"]))["state"]
            assert state["page"] >= page_before, (room["id"], state["page"], page_before)
            # The page in flight at the kill may have been applied without its ack arriving.
            assert state["page"] <= acked_pages[room["id"]] + 1
            stored = orjson.loads(await raw_redis(
                "HGET", f"{redis_prefix}pratico:checkpoint:{room['id']}", "d"))
            assert stored["version"] >= version_before
            events = await http.get(f"{second.url}/rooms/{room['id']}/events?limit=1000",
                                    token=token)
            answered = {e["data"]["question_id"] for e in events.json()["items"]
                        if e["type"] == "quiz_answered"}
            assert acked_answers[room["id"]] <= answered, room["id"]
            assert acked_answers[room["id"]], "no answer was acknowledged before the kill"
