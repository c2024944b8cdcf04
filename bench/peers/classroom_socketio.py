"""The peer of the classroom bench: python-socketio doing the same /classroom work.

    python bench/peers/classroom_socketio.py PORT REDIS_URL KEY_PREFIX PG_DSN JWT_SECRET

An `AsyncServer` (ASGI, served by uvicorn on uvloop: python-socketio at its
fastest) with redis.asyncio and an asyncpg pool, written the way a
python-socketio service is usually written (one await per command). Per
connect and `join_lesson` it does the same Redis and Postgres work as the
daemon (PROTOCOL.md §2): teacher connect = cooldown TTL, alive hash (read,
write, persist), `{user_id}` hash; student connect = `{client_id}` exists +
write; join = lesson + seat from Postgres, the seat hash (created if
missing), `lesson_teacher_*`/`lesson_student_*` and `{user_id}` hashes with
their TTLs, scheduled→live for the teacher, a `room_events` row.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from urllib.parse import parse_qs

import asyncpg
import jwt
import redis.asyncio as aredis
import socketio
import uvicorn

NS = "/classroom"
DAY = 86400


def main() -> None:
    port, redis_url, prefix, dsn, secret = sys.argv[1:6]
    sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*", logger=False,
                               engineio_logger=False)
    r = aredis.Redis(connection_pool=aredis.BlockingConnectionPool.from_url(
        redis_url, decode_responses=True, max_connections=64, timeout=30))
    state: dict[str, asyncpg.Pool] = {}
    creating = asyncio.Lock()

    def k(key: str) -> str:
        return prefix + key

    async def pool() -> asyncpg.Pool:
        async with creating:
            if "pg" not in state:
                state["pg"] = await asyncpg.create_pool(dsn, min_size=4, max_size=8)
        return state["pg"]

    @sio.on("connect", namespace=NS)
    async def connect(sid: str, environ: dict, auth: dict | None) -> bool:
        query = {key: v[0] for key, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        token = (auth or {}).get("token") or query.get("auth")
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"])
        except Exception as exc:
            raise socketio.exceptions.ConnectionRefusedError("unauthorized") from exc
        user, org, role = claims["sub"], claims.get("org_id", ""), claims.get("role")
        if role == "teacher":
            if await r.ttl(k(f"cooldown:org_{org}_user_{user}")) > 0:
                raise socketio.exceptions.ConnectionRefusedError("cooldown")
            alive = k(f"alive:org_{org}_user_{user}")
            await r.hgetall(alive)
            await r.hset(alive, mapping={"login_time": str(int(time.time())),
                                         "state": "connect"})
            await r.persist(alive)
            await r.hset(k(user), mapping={"sid": sid, "client_id": user, "role": role,
                                           "org_id": org})
            await r.expire(k(user), DAY)
            await sio.emit("teacher_connect", {"user_id": user}, room=f"managers:{org}",
                           namespace=NS)
        else:
            await r.exists(k(user))
            await r.hset(k(user), mapping={"sid": sid, "client_id": user, "role": role,
                                           "org_id": org})
            await r.expire(k(user), DAY)
        await sio.save_session(sid, {"user": user, "org": org, "role": role}, namespace=NS)
        return True

    @sio.on("join_lesson", namespace=NS)
    async def join_lesson(sid: str, payload: dict) -> dict:
        session = await sio.get_session(sid, namespace=NS)
        lesson_id = payload.get("lesson_id")
        user = session["user"]
        if payload.get("user_id") != user or payload.get("role") != session["role"]:
            return {"status": "ERROR", "data": {"code": "forbidden"}}
        pg = await pool()
        lesson = await pg.fetchrow("SELECT id, org_id, teacher_id, seat_count, status"
                                   " FROM lessons WHERE id = $1", lesson_id)
        if lesson is None:
            return {"status": "ERROR", "data": {"code": "lesson_not_found"}}
        seat = None
        if session["role"] == "student":
            seat = await pg.fetchval("SELECT seat FROM student_attend WHERE lesson_id = $1"
                                     " AND student_id = $2", lesson_id, user)
        await sio.enter_room(sid, lesson_id, namespace=NS)
        seats = await r.hgetall(k(f"lesson_seat_{lesson_id}"))
        if not seats:
            seats = {str(i): "" for i in range(1, lesson["seat_count"] + 1)}
            await r.hset(k(f"lesson_seat_{lesson_id}"), mapping=seats)
        if seat is not None and seats.get(str(seat)) != user:
            seats[str(seat)] = user
            await r.hset(k(f"lesson_seat_{lesson_id}"), str(seat), user)
        if session["role"] == "teacher":
            await r.hset(k(f"lesson_teacher_{lesson_id}"), user, sid)
            await r.expire(k(f"lesson_teacher_{lesson_id}"), DAY)
            await r.hset(k(user), mapping={"sid": sid, "client_id": user, "role": "teacher",
                                           "org_id": session["org"], "lesson_id": lesson_id})
            await r.expire(k(user), DAY)
            await pg.execute("UPDATE lessons SET status = 'live', started_at = now()"
                             " WHERE id = $1 AND status = 'scheduled'", lesson_id)
        else:
            await r.hset(k(f"lesson_student_{lesson_id}"), user, sid)
            await r.expire(k(f"lesson_student_{lesson_id}"), DAY)
            await r.exists(k(user))
            await r.hset(k(user), mapping={"sid": sid, "client_id": user, "role": "student",
                                           "org_id": session["org"], "lesson_id": lesson_id})
            await r.expire(k(user), DAY)
        await pg.execute("INSERT INTO room_events (id, created_at, room_id, user_id, type, data)"
                         " VALUES ($1, now(), $2, $3, 'lesson_joined', $4::jsonb)",
                         uuid.uuid4(), lesson_id, user,
                         json.dumps({"role": session["role"], "sid": sid, "seat": seat}))
        return {"status": "SUCCESS", "data": {"lesson_id": lesson_id, "seat": seat,
                                              "seats": seats, "client_id": user}}

    app = socketio.ASGIApp(sio, socketio_path="sockets")
    uvicorn.run(app, host="127.0.0.1", port=int(port), loop="uvloop", log_level="warning",
                backlog=4096, ws_max_size=1 << 20)


if __name__ == "__main__":
    main()
