"""Classroom bench: 2,000 clients connect and `join_lesson` as fast as possible.

    .venv/bin/python bench/classroom_bench.py [--lessons 60] [--students 32]
                                              [--inflight 256] [--repeat 1]

60 lessons × (1 teacher + 32 students) = 1,980 Socket.IO clients connect to
`/classroom` (token in the query, as the seeds do) and send `join_lesson`;
the time until the last join is acknowledged and the join-ack latency
percentiles are measured against:

- pratico-daemon (`python -m pratico_daemon serve`, Redis + Postgres), and
- a python-socketio server doing the same Redis and Postgres work
  (bench/peers/classroom_socketio.py, uvicorn + uvloop),

each in its own process, with a fresh Postgres database (60 lessons, 32 seated
students each) and a fresh Redis key prefix per run. The clients are one
asyncio process speaking Engine.IO v4 / Socket.IO v5 over a minimal raw
WebSocket client (bench/raw_ws.py: the generator shares the 2 cores with the
server it measures, so it must cost little; the same for both servers). Each
server is measured once the previous run's TIME_WAIT sockets have drained
(bench/tcp_settle.py). At most
`--inflight` clients are between "TCP connect" and "joined" at once, like a
school's devices arriving together rather than a SYN flood.

Prints one table with each server's figures and the daemon's ratio to the
peer measured in the same run. Goal (issue 5): all joined in ≤ 2.5 s, ≥ 2×
faster than the peer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import redis
from raw_ws import RawWebSocket
from tcp_settle import settle

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("PRATICO_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("PRATICO_BENCH_REDIS", "redis://127.0.0.1:6379/0")
SECRET = "bench-secret-that-is-long-enough-for-hs256-0123456789"
NS = "/classroom"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token(sub: str, role: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "role": role, "org_id": "org1", "iat": now,
                       "exp": now + 3600}, SECRET, algorithm="HS256")


# -- fixtures: a database with lessons, a key prefix ------------------------------------------

async def create_database(lessons: int, students: int) -> str:
    name = f"bench_classroom_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(f"{PG_URL}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    # The daemon's own migrations, in their own process (they run on trio).
    migrate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pratico_daemon", "migrate", cwd=ROOT,
        env={**os.environ, "PRATICO_POSTGRES__DSN": f"{PG_URL}/{name}",
             "PRATICO_AUTH__JWT_SECRET": SECRET}, stdout=subprocess.DEVNULL)
    if await migrate.wait() != 0:
        raise RuntimeError("migrations failed")
    conn = await asyncpg.connect(f"{PG_URL}/{name}")
    try:
        await conn.executemany(
            "INSERT INTO lessons (id, org_id, teacher_id, title, seat_count)"
            " VALUES ($1, 'org1', $2, $3, $4)",
            [(f"L{i}", f"t{i}", f"lesson {i}", students) for i in range(lessons)])
        await conn.executemany(
            "INSERT INTO student_attend (lesson_id, student_id, seat) VALUES ($1, $2, $3)",
            [(f"L{i}", f"s{i}_{j}", j + 1) for i in range(lessons) for j in range(students)])
    finally:
        await conn.close()
    return name


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(f"{PG_URL}/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def clean_prefix(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


# -- servers ----------------------------------------------------------------------------------

def start_daemon(port: int, prefix: str, dsn: str, state_dir: str) -> subprocess.Popen[bytes]:
    env = {**os.environ,
           "PRATICO_REALTIME__HOST": "127.0.0.1", "PRATICO_REALTIME__PORT": str(port),
           "PRATICO_REDIS__URL": REDIS_URL, "PRATICO_REDIS__KEY_PREFIX": prefix,
           "PRATICO_POSTGRES__DSN": dsn, "PRATICO_AUTH__JWT_SECRET": SECRET,
           "PRATICO_STORAGE__STATE_DIR": state_dir, "PRATICO_LOG__LEVEL": "warning",
           "PRATICO_LIMITS__MAX_CONNECTIONS_PER_IP": "10000"}
    return subprocess.Popen([sys.executable, "-m", "pratico_daemon", "serve"], env=env,
                            cwd=ROOT)


def start_peer(port: int, prefix: str, dsn: str) -> subprocess.Popen[bytes]:
    script = ROOT / "bench/peers/classroom_socketio.py"
    return subprocess.Popen([sys.executable, str(script), str(port), REDIS_URL, prefix, dsn,
                             SECRET], cwd=ROOT)


def wait_ready(port: int, path: str, limit_s: float = 30) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                if r.status in (200, 400):
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in (400, 404) and path != "/readyz":
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server on {port} not ready")


# -- the load -----------------------------------------------------------------------------------

async def one_client(port: int, sub: str, role: str, lesson: str, gate: asyncio.Semaphore,
                     joined: list[float], hold: asyncio.Event, on_joined: Any) -> None:
    tok = token(sub, role)
    path = f"/sockets/?EIO=4&transport=websocket&role={role}&org_id=org1&auth={tok}"
    async with gate:
        ws = await RawWebSocket.connect(port, path)
        opening = await ws.recv()
        assert opening.startswith("0"), opening
        ws.send(f"40{NS},{json.dumps({'token': tok})}")
        while True:
            frame = await ws.recv()
            if frame.startswith(f"40{NS},"):
                break
            if frame.startswith(f"44{NS},"):
                raise RuntimeError(f"{sub} refused: {frame}")
            if frame == "2":
                ws.send("3")
        payload = {"user_id": sub, "lesson_id": lesson, "role": role}
        sent = time.perf_counter()
        ws.send(f"42{NS},1{json.dumps(['join_lesson', payload])}")
        while True:
            frame = await ws.recv()
            if frame.startswith(f"43{NS},1"):
                break
            if frame == "2":
                ws.send("3")
        joined.append(time.perf_counter() - sent)
        reply = json.loads(frame[len(f"43{NS},1"):])[0]
        if reply.get("status") != "SUCCESS":
            raise RuntimeError(f"{sub}: {reply}")
        on_joined()
    await hold.wait()
    await ws.close()


GIVE_UP_S = 120.0  # a run that has not joined everyone by then reports a failure


async def load(port: int, lessons: int, students: int, inflight: int) -> dict[str, float]:
    gate = asyncio.Semaphore(inflight)
    joined: list[float] = []
    hold = asyncio.Event()
    clients = []
    for i in range(lessons):
        clients.append((f"t{i}", "teacher", f"L{i}"))
        clients.extend((f"s{i}_{j}", "student", f"L{i}") for j in range(students))
    all_joined = asyncio.Event()
    failures: list[BaseException] = []

    async def client(sub: str, role: str, lesson: str) -> None:
        try:
            await one_client(port, sub, role, lesson, gate, joined, hold, on_joined)
        except Exception as exc:  # reported once, below
            failures.append(exc)
            all_joined.set()

    def on_joined() -> None:
        if len(joined) == len(clients):
            all_joined.set()

    start = time.perf_counter()
    tasks = [asyncio.create_task(client(sub, role, lesson)) for sub, role, lesson in clients]
    while not all_joined.is_set():
        if time.perf_counter() - start > GIVE_UP_S:
            failures.append(TimeoutError(
                f"only {len(joined)}/{len(clients)} joined in {GIVE_UP_S:.0f} s"))
            break
        try:
            await asyncio.wait_for(all_joined.wait(), 5)
        except TimeoutError:
            print(f"  … {len(joined)}/{len(clients)} joined", file=sys.stderr)
    elapsed = time.perf_counter() - start
    hold.set()
    # A client still waiting for an answer that will not come (its join failed,
    # its connection was dropped) must not keep the bench running for ever.
    _, stragglers = await asyncio.wait(tasks, timeout=30)
    for task in stragglers:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if failures:
        raise failures[0]
    cuts = statistics.quantiles(joined, n=100)
    return {"clients": len(clients), "all_joined_s": elapsed, "p50_ms": cuts[49] * 1000,
            "p99_ms": cuts[98] * 1000}


async def run_one(kind: str, args: argparse.Namespace) -> dict[str, float]:
    await asyncio.to_thread(settle)  # the previous run's closed connections (tcp_settle.py)
    db = await create_database(args.lessons, args.students)
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    port = free_port()
    with tempfile.TemporaryDirectory() as state_dir:
        dsn = f"{PG_URL}/{db}"
        server = (start_daemon(port, prefix, dsn, state_dir) if kind == "pratico-daemon"
                  else start_peer(port, prefix, dsn))
        try:
            await asyncio.to_thread(wait_ready, port, "/readyz" if kind == "pratico-daemon"
                                    else "/sockets/")
            return await load(port, args.lessons, args.students, args.inflight)
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            clean_prefix(prefix)  # after the server is gone: its drain writes presence too
            await drop_database(db)


async def main(args: argparse.Namespace) -> None:
    kinds = ["pratico-daemon", "python-socketio"]
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.repeat):
        for kind in kinds:  # round-robin: the machine is shared
            result = await run_one(kind, args)
            if kind not in best or result["all_joined_s"] < best[kind]["all_joined_s"]:
                best[kind] = result
    peer = best["python-socketio"]
    print(f"\nclassroom: {args.lessons} lessons x (1 teacher + {args.students} students), "
          f"connect + join_lesson, {args.inflight} in flight, best of {args.repeat}")
    print(f"{'server':<18}{'clients':>8}{'all joined s':>14}{'join p50 ms':>13}"
          f"{'join p99 ms':>13}{'speed-up':>10}")
    for kind in kinds:
        r = best[kind]
        ratio = peer["all_joined_s"] / r["all_joined_s"]
        print(f"{kind:<18}{r['clients']:>8.0f}{r['all_joined_s']:>14.2f}{r['p50_ms']:>13.1f}"
              f"{r['p99_ms']:>13.1f}{ratio:>9.2f}x")
    d = best["pratico-daemon"]
    print(f"\nratios daemon/peer: all-joined {d['all_joined_s'] / peer['all_joined_s']:.2f}, "
          f"p50 {d['p50_ms'] / peer['p50_ms']:.2f}, p99 {d['p99_ms'] / peer['p99_ms']:.2f} "
          "(lower is better)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lessons", type=int, default=60)
    parser.add_argument("--students", type=int, default=32)
    parser.add_argument("--inflight", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=1)
    asyncio.run(main(parser.parse_args()))
