"""The daemon side of bench/gateway_bench.py: a real `Daemon` with a "/bench" namespace.

    python bench/gateway_bench_server.py [--profile FILE]

Runs one `Daemon` in embedded mode (state in a temporary directory, realtime
port 0), prints the bound port on stdout, and serves until its stdin closes
or SIGTERM (either way a drain, then exit): a bench that dies closes the pipe,
so no server outlives it. A `gc` line on stdin is answered with the garbage
collector's pauses since the previous `gc` line (one JSON line).
With --profile, cProfile runs between the bench's `profile on` and `profile
off` (the traffic phases) and the stats are written to FILE when the process
exits: that is how the bench answers "where does the time go" without py-spy.

The "/bench" namespace is the smallest product that exercises the paths the
goals are about — a namespace connect, a room join through the room's inbox,
and a room broadcast encoded once per framing:

- `join {room}` → the client joins room `room` (created on first use);
- `say {room, t, …}` → `room.broadcast("said", payload)` to every member;
  the sender is not a member, and the payload comes back unchanged, so a
  receiver computes its delivery latency from `t` (time.monotonic() of the
  sender; system-wide on Linux).

Limits raised for the bench (and only here): `max_connections_per_ip` (every
client comes from 127.0.0.1), `rate_per_s`/`rate_burst` (a sender emits up to
hundreds of events a second in the burst phase), `max_room_members`.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from pratico_daemon import logs
from pratico_daemon.config import from_mapping
from pratico_daemon.daemon import Daemon
from pratico_daemon.errors import AppError
from pratico_daemon.rooms.room import Room
from pratico_daemon.services import Services
from pratico_daemon.session.namespace import Client, Namespace

NAMESPACE = "/bench"
BENCH_SECRET = "bench-secret-long-enough-for-hs256-0123456789abcdef"


class BenchNamespace(Namespace):
    """Join a room, broadcast to it; members leave their rooms when they are gone."""

    name = NAMESPACE

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self.on("join")(self._join)
        self.on("say")(self._say)

    async def _open(self, room_id: Any) -> Room:
        if not isinstance(room_id, str) or not room_id:
            raise AppError("invalid_payload", "room must be a non-empty string")
        return await self.services.rooms.open(
            room_id, lambda: Room(room_id, "bench", NAMESPACE, max_members=10_000))

    async def _join(self, client: Client, payload: dict[str, Any]) -> dict[str, Any]:
        room = await self._open(payload.get("room"))
        members = await room.call(lambda r: (r.join(client), len(r.members))[1])
        client.data["room"] = room.room_id
        return {"members": members}

    async def _say(self, client: Client, payload: dict[str, Any]) -> None:
        room = await self._open(payload.get("room"))
        await room.call(lambda r: r.broadcast("said", payload))

    async def gone(self, client: Client) -> None:
        room = self.services.rooms.get(client.data.get("room", ""))
        if room is not None:
            await room.call(lambda r: r.leave(client.member_id))


def bench_config(state_dir: str) -> Any:
    return from_mapping({
        "realtime": {"host": "127.0.0.1", "port": 0},
        "storage": {"state_dir": state_dir},
        "auth": {"jwt_secret": BENCH_SECRET},
        "daemon": {"shutdown_timeout_s": 2},
        "log": {"level": "warning", "format": "text"},
        "limits": {
            "max_connections_per_ip": 20_000,
            "max_connections": 20_000,
            "rate_per_s": 10_000.0,
            "rate_burst": 10_000,
            "max_room_members": 10_000,
        },
    }, environ={})


class GcPauses:
    """Counts the cyclic garbage collector's pauses, per generation (via `gc.callbacks`).

    A full collection walks every live object, and each connection owns a few
    hundred of them: the pauses are the first suspect for a latency tail.
    """

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.total_s = [0.0, 0.0, 0.0]
        self.max_s = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        gen = info["generation"]
        pause = time.perf_counter() - self._started
        self.count[gen] += 1
        self.total_s[gen] += pause
        self.max_s[gen] = max(self.max_s[gen], pause)

    def take(self) -> dict[str, list[float]]:
        """The pauses since the previous `take`, and start counting afresh."""
        taken = {"count": list(self.count), "total_s": list(self.total_s),
                 "max_s": list(self.max_s)}
        self.count, self.total_s, self.max_s = [0, 0, 0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        return taken


async def serve(state_dir: str, profiler: cProfile.Profile | None = None) -> None:
    config = bench_config(state_dir)
    logs.setup(config.log.level, config.log.format, config.log.file)
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    daemon = Daemon(config, products=[BenchNamespace])
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(lambda task_status: daemon.run(
            handle_signals=True, task_status=task_status))
        print(bound.realtime.rsplit(":", 1)[1], flush=True)
        await _answer_stdin(pauses, profiler)
        daemon.request_shutdown()


async def _answer_stdin(pauses: GcPauses, profiler: cProfile.Profile | None) -> None:
    """Until stdin closes, answer commands of the bench.

    `gc`: the GC pauses since the last `gc`, as one JSON line.
    `profile on` / `profile off`: profile only what the bench measures (the
    traffic phases), not the start, the connects and the idle time.
    """
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    async with stdin:
        while chunk := await stdin.receive_some(4096):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                command = line.strip()
                if command == b"gc":
                    print(json.dumps(pauses.take()), flush=True)
                elif command == b"profile on" and profiler is not None:
                    profiler.enable()
                elif command == b"profile off" and profiler is not None:
                    profiler.disable()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", help="write cProfile stats here at exit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        state_dir = str(Path(tmp) / "state")
        if not args.profile:
            trio.run(serve, state_dir)
            return
        profiler = cProfile.Profile()
        try:
            trio.run(serve, state_dir, profiler)
        finally:
            profiler.disable()
            profiler.dump_stats(args.profile)
            print(f"profile written to {args.profile}", file=sys.stderr)


if __name__ == "__main__":
    main()
