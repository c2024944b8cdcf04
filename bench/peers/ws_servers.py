"""WebSocket servers on trio, one per candidate, for bench/ws_server_compare.py.

Run as `python bench/peers/ws_servers.py VARIANT`; it binds 127.0.0.1 on a free
port, prints the port on stdout and serves until killed. Every variant speaks
the same tiny protocol:

- a text message `bcast N` makes the server send one pre-built 48-byte text
  message N times to every *other* connection (the sender is the controller);
- any other message is echoed back.

Variants:
- `wsproto`, `websockets`: our own trio loop (non-blocking stdlib sockets and
  `trio.lowlevel.wait_readable/wait_writable`, as in pratico_daemon/transport)
  driving the named sans-IO core. Broadcast: the frame is encoded once and each
  connection first tries a non-blocking `socket.send`, queueing the rest to its
  writer task only when the kernel buffer is full.
- `wsproto-await`: same loop, but the broadcast awaits a send per connection
  (the baseline the non-blocking path is compared with).
- `trio-websocket`: its server; broadcast with `await send_message` per peer.
- `hypercorn`: quart-trio on hypercorn's trio worker; each connection's handler
  forwards a bounded channel of broadcast messages to `websocket.send`.
- `pratico`: pratico_daemon.transport's front listener with an echo/broadcast
  handler (added once the transport existed, to check it keeps the numbers).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import socket
import sys
from typing import Any

import trio

PAYLOAD = "x" * 48
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def text_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


class Conn:
    """One connection of the own-loop variants: socket, core, outbox, writer wakeup."""

    def __init__(self, sock: socket.socket, core: Any) -> None:
        self.sock = sock
        self.core = core
        self.outbox: collections.deque[bytes | memoryview] = collections.deque()
        self.wake = trio.Event()

    def send_nowait(self, frame: bytes) -> None:
        if not self.outbox:
            try:
                sent = self.sock.send(frame)
            except BlockingIOError:
                sent = 0
            if sent == len(frame):
                return
            frame = memoryview(frame)[sent:]
        self.outbox.append(frame)
        self.wake.set()

    async def send_await(self, frame: bytes) -> None:
        view = memoryview(frame)
        while view:
            await trio.lowlevel.wait_writable(self.sock)
            view = view[self.sock.send(view):]

    async def writer(self) -> None:
        while True:
            await self.wake.wait()
            self.wake = trio.Event()
            while self.outbox:
                await trio.lowlevel.wait_writable(self.sock)
                head = self.outbox[0]
                try:
                    sent = self.sock.send(head)
                except BlockingIOError:
                    continue
                if sent == len(head):
                    self.outbox.popleft()
                else:
                    self.outbox[0] = memoryview(head)[sent:]


async def _handshake(sock: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        await trio.lowlevel.wait_readable(sock)
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    key = next(
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    sock.send(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    return rest


def _wsproto_core() -> Any:
    from wsproto.connection import Connection, ConnectionType

    return Connection(ConnectionType.SERVER)


def _wsproto_messages(core: Any, data: bytes) -> list[str]:
    from wsproto.events import CloseConnection, Ping, TextMessage

    core.receive_data(data)
    out = []
    for event in core.events():
        if isinstance(event, TextMessage):
            out.append(event.data)
        elif isinstance(event, Ping):
            core.send(event.response())
        elif isinstance(event, CloseConnection):
            raise EOFError
    return out


def _websockets_core() -> Any:
    from websockets.protocol import Protocol, Side

    return Protocol(Side.SERVER, max_size=1 << 20)


def _websockets_messages(core: Any, data: bytes) -> list[str]:
    from websockets.frames import Opcode

    core.receive_data(data)
    out = []
    for frame in core.events_received():
        if frame.opcode is Opcode.TEXT:
            out.append(frame.data.decode())
        elif frame.opcode is Opcode.CLOSE:
            raise EOFError
    return out


async def serve_own_loop(variant: str) -> None:
    make_core, messages = {
        "wsproto": (_wsproto_core, _wsproto_messages),
        "wsproto-await": (_wsproto_core, _wsproto_messages),
        "websockets": (_websockets_core, _websockets_messages),
    }[variant]
    awaited = variant.endswith("-await")
    conns: set[Conn] = set()
    frame = text_frame(PAYLOAD.encode())

    async def connection(sock: socket.socket) -> None:
        try:
            rest = await _handshake(sock)
            conn = Conn(sock, make_core())
            conns.add(conn)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.writer)
                data = rest
                while True:
                    for text in messages(conn.core, data):
                        if text.startswith("bcast "):
                            others = [c for c in conns if c is not conn]
                            for _ in range(int(text[6:])):
                                for other in others:
                                    if awaited:
                                        await other.send_await(frame)
                                    else:
                                        other.send_nowait(frame)
                                await trio.lowlevel.checkpoint()
                        else:
                            conn.send_nowait(text_frame(text.encode()))
                    while True:
                        try:
                            data = sock.recv(65536)
                            break
                        except BlockingIOError:
                            await trio.lowlevel.wait_readable(sock)
                    if not data:
                        break
                nursery.cancel_scope.cancel()
        except (EOFError, OSError):
            pass
        finally:
            conns.discard(conn) if "conn" in locals() else None
            trio.lowlevel.notify_closing(sock)
            sock.close()

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(2048)
    listener.setblocking(False)
    print(listener.getsockname()[1], flush=True)
    async with trio.open_nursery() as nursery:
        while True:
            await trio.lowlevel.wait_readable(listener)
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(connection, sock)


async def serve_trio_websocket() -> None:
    from trio_websocket import ConnectionClosed, serve_websocket

    conns: set[Any] = set()

    async def handler(request: Any) -> None:
        ws = await request.accept()
        conns.add(ws)
        try:
            while True:
                text = await ws.get_message()
                if text.startswith("bcast "):
                    others = [c for c in conns if c is not ws]
                    for _ in range(int(text[6:])):
                        for other in others:
                            await other.send_message(PAYLOAD)
                else:
                    await ws.send_message(text)
        except ConnectionClosed:
            pass
        finally:
            conns.discard(ws)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: serve_websocket(
                handler, "127.0.0.1", 0, ssl_context=None, task_status=task_status
            )
        )
        print(server.port, flush=True)


async def serve_hypercorn() -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve
    from quart import websocket
    from quart_trio import QuartTrio

    app = QuartTrio("bench")
    outboxes: set[trio.MemorySendChannel[str]] = set()

    @app.websocket("/ws/bench")
    async def ws() -> None:
        send, receive = trio.open_memory_channel[str](1000)
        mine = send

        async def forward() -> None:
            async for text in receive:
                await websocket.send(text)

        outboxes.add(mine)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forward)
                while True:
                    text = await websocket.receive()
                    if isinstance(text, str) and text.startswith("bcast "):
                        others = [o for o in outboxes if o is not mine]
                        for _ in range(int(text[6:])):
                            for other in others:
                                await other.send(PAYLOAD)
                    else:
                        await websocket.send(text)
        finally:
            outboxes.discard(mine)

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.backlog = 2048
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: serve(app, config, task_status=task_status))
        print(binds[0].rsplit(":", 1)[1], flush=True)


async def serve_pratico() -> None:
    sys.path.insert(0, ".")
    from pratico_daemon.config import from_mapping
    from pratico_daemon.metrics import Metrics
    from pratico_daemon.transport import (
        ConnectionClosed,
        FrontListener,
        Handlers,
        encode_text_frame,
    )

    config = from_mapping({"limits": {"max_connections_per_ip": 100000}}, environ={})
    conns: set[Any] = set()
    frame = encode_text_frame(PAYLOAD)

    async def websocket(ws: Any, request: Any) -> None:
        conns.add(ws)
        try:
            while True:
                text = await ws.receive()
                if isinstance(text, str) and text.startswith("bcast "):
                    others = [c for c in conns if c is not ws]
                    for _ in range(int(text[6:])):
                        for other in others:
                            other.send_frame_nowait(frame)
                        await trio.lowlevel.checkpoint()
                else:
                    await ws.send_text(text)
        except ConnectionClosed:
            pass
        finally:
            conns.discard(ws)

    handlers = Handlers(websocket=websocket)
    front = FrontListener(config.limits, Metrics(), app=None, handlers=handlers)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(front.serve, "127.0.0.1", 0)
        print(address.rsplit(":", 1)[1], flush=True)


def main() -> None:
    variant = sys.argv[1]
    if variant == "trio-websocket":
        trio.run(serve_trio_websocket)
    elif variant == "hypercorn":
        trio.run(serve_hypercorn)
    elif variant == "pratico":
        trio.run(serve_pratico)
    else:
        trio.run(serve_own_loop, variant)


if __name__ == "__main__":
    main()
