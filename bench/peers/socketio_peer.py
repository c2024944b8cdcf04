"""The peer of bench/gateway_bench.py: the same "/bench" namespace on python-socketio.

    python bench/peers/socketio_peer.py

python-socketio at its fastest as it is usually deployed: an `AsyncServer`
(ASGI app) served by uvicorn on uvloop, one process, WebSocket transport
only, Socket.IO at `/sockets/` like the daemon. It binds a free port on
127.0.0.1, prints it on stdout and serves until its stdin closes (the bench
that started it is gone) or it is killed.

Same events and the same answers as bench/gateway_bench_server.py:
`join {room}` enters the room and acks `{"members": n}`; `say {room, …}`
emits `said` with the payload, unchanged, to the room (the sender is not a
member) and acks. Pings follow Engine.IO defaults (25 s / 20 s), as in the
daemon.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import socketio
import uvicorn
import uvloop

NAMESPACE = "/bench"


def create_app() -> Any:
    sio = socketio.AsyncServer(async_mode="asgi", transports=["websocket"],
                               cors_allowed_origins="*", logger=False, engineio_logger=False)
    members: dict[str, int] = {}

    @sio.on("join", namespace=NAMESPACE)
    async def join(sid: str, payload: dict[str, Any]) -> dict[str, Any]:
        room = payload["room"]
        await sio.enter_room(sid, room, namespace=NAMESPACE)
        members[room] = members.get(room, 0) + 1
        return {"status": "SUCCESS", "data": {"members": members[room]}}

    @sio.on("say", namespace=NAMESPACE)
    async def say(sid: str, payload: dict[str, Any]) -> dict[str, Any]:
        await sio.emit("said", payload, room=payload["room"], namespace=NAMESPACE)
        return {"status": "SUCCESS", "data": {}}

    return socketio.ASGIApp(sio, socketio_path="sockets")


def main() -> None:
    # Bind and listen first: the port printed is accepting connections at once (the
    # kernel queues them until uvicorn starts serving on the socket).
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(create_app(), loop="none", lifespan="off",
                            log_level="warning", access_log=False, backlog=4096)
    server = uvicorn.Server(config)

    async def serve() -> None:
        def stdin_readable() -> None:
            if not os.read(0, 4096):
                server.should_exit = True

        asyncio.get_running_loop().add_reader(0, stdin_readable)
        await server.serve(sockets=[sock])

    uvloop.run(serve())


if __name__ == "__main__":
    main()
