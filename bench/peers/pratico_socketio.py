"""The peer of the Pratico bench: python-socketio doing the same /pratico work.

    python bench/peers/pratico_socketio.py PORT PG_DSN

An `AsyncServer` (ASGI, uvicorn on uvloop) written the way a python-socketio
service usually is: rooms in dicts, `sio.emit(..., room=...)` for
broadcasts, one asyncpg INSERT per durable event. What the bench exercises,
it does like the daemon: `join` (room by name, participants listed),
`set_page` → `page_changed` to the room, `launch_quiz` → `quiz_launched`
without the correct answers, `answer_quiz` → once per question, a
`quiz_answered` row in `room_events` committed *before* the ack,
`close_quiz` → results. (Trust is simplified: the trainer is whoever says so
in `join`; the daemon checks a JWT.)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import uuid

import asyncpg
import socketio
import uvicorn

NS = "/pratico"


def main() -> None:
    port, dsn = sys.argv[1:3]
    sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*", logger=False,
                               engineio_logger=False)
    rooms: dict[str, dict] = {}
    pool: list[asyncpg.Pool] = []
    creating: list[asyncio.Lock] = []

    async def db() -> asyncpg.Pool:
        if not creating:
            creating.append(asyncio.Lock())
        async with creating[0]:
            if not pool:  # one pool of 8, like the daemon's default
                pool.append(await asyncpg.create_pool(dsn, min_size=1, max_size=8))
        return pool[0]

    def ok(data: dict) -> dict:
        return {"status": "SUCCESS", "data": data}

    def err(code: str) -> dict:
        return {"status": "ERROR", "data": {"code": code, "message": code}}

    @sio.on("join", namespace=NS)
    async def join(sid, data):
        name = data["room"]
        room = rooms.setdefault(name, {"id": str(uuid.uuid4()), "page": None, "quiz": None,
                                       "participants": {}, "scores": {}})
        room["participants"][sid] = data.get("display_name") or "Trainer"
        await sio.save_session(sid, {"room": name, "trainer": bool(data.get("trainer"))},
                               namespace=NS)
        await sio.enter_room(sid, name, namespace=NS)
        await sio.emit("participant_joined", {"participant_id": sid}, room=name,
                       skip_sid=sid, namespace=NS)
        return ok({"participant_id": sid, "state": {
            "room": {"id": room["id"], "name": name}, "page": room["page"],
            "participants": [{"participant_id": p, "display_name": n}
                             for p, n in room["participants"].items()]}})

    @sio.on("set_page", namespace=NS)
    async def set_page(sid, data):
        session = await sio.get_session(sid, namespace=NS)
        if not session["trainer"]:
            return err("forbidden")
        rooms[session["room"]]["page"] = data["page"]
        await sio.emit("page_changed", {"page": data["page"], "by": "trainer"},
                       room=session["room"], namespace=NS)
        return ok({"page": data["page"]})

    @sio.on("launch_quiz", namespace=NS)
    async def launch_quiz(sid, data):
        session = await sio.get_session(sid, namespace=NS)
        room = rooms[session["room"]]
        room["quiz"] = {"id": data["quiz_id"], "questions": {q["id"]: q for q in data["questions"]},
                        "answers": {}, "open": True}
        public = [{k: v for k, v in q.items() if k != "correct"} for q in data["questions"]]
        await sio.emit("quiz_launched", {"quiz_id": data["quiz_id"], "questions": public,
                                         "deadline": None}, room=session["room"], namespace=NS)
        return ok({"quiz_id": data["quiz_id"]})

    @sio.on("answer_quiz", namespace=NS)
    async def answer_quiz(sid, data):
        session = await sio.get_session(sid, namespace=NS)
        room = rooms[session["room"]]
        quiz = room["quiz"]
        if quiz is None or quiz["id"] != data["quiz_id"]:
            return err("not_found")
        if not quiz["open"]:
            return err("quiz_closed")
        key = (sid, data["question_id"])
        if key in quiz["answers"]:
            return err("conflict")
        question = quiz["questions"][data["question_id"]]
        correct = data["choice"] == question["correct"]
        quiz["answers"][key] = data["choice"]
        await (await db()).execute(
            "INSERT INTO room_events (id, created_at, room_id, user_id, type, data)"
            " VALUES ($1, $2, $3, 'trainer', 'quiz_answered', $4::jsonb)",
            uuid.uuid4(), dt.datetime.now(dt.UTC), room["id"],
            json.dumps({"quiz_id": quiz["id"], "question_id": data["question_id"],
                        "participant_id": sid, "display_name": room["participants"][sid],
                        "choice": data["choice"], "correct": correct}))
        return ok({"accepted": True})

    @sio.on("close_quiz", namespace=NS)
    async def close_quiz(sid, data):
        session = await sio.get_session(sid, namespace=NS)
        room = rooms[session["room"]]
        room["quiz"]["open"] = False
        await sio.emit("quiz_closed", {"quiz_id": data["quiz_id"]}, room=session["room"],
                       namespace=NS)
        return ok({"quiz_id": data["quiz_id"]})

    app = socketio.ASGIApp(sio, socketio_path="sockets")
    uvicorn.run(app, host="127.0.0.1", port=int(port), loop="uvloop", log_level="warning",
                backlog=4096, ws_max_size=1 << 20)


if __name__ == "__main__":
    main()
