"""A front listener on port 0 with handlers the test chooses, and raw-socket helpers."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import h11
import trio
from quart import request as quart_request
from quart_trio import QuartTrio

from pratico_daemon.config import LimitsSection, from_mapping
from pratico_daemon.metrics import Metrics
from pratico_daemon.transport import ConnectionClosed, FrontListener, Handlers, Request, WebSocket
from tests.support.ws import ws_client  # noqa: F401  (re-exported for the transport tests)


def limits(**overrides: Any) -> LimitsSection:
    return from_mapping({"limits": overrides}, environ={}).limits


@attrs.define
class Echo:
    """A WebSocket handler that echoes and remembers its connections and requests."""

    open: list[WebSocket] = attrs.Factory(list)
    requests: list[Request] = attrs.Factory(list)
    closed: list[ConnectionClosed] = attrs.Factory(list)
    joined: trio.Event = attrs.Factory(trio.Event)

    async def __call__(self, ws: WebSocket, request: Request) -> None:
        self.open.append(ws)
        self.requests.append(request)
        self.joined.set()
        try:
            while True:
                message = await ws.receive()
                if message == "crash":
                    raise RuntimeError("handler bug")
                if isinstance(message, str):
                    await ws.send_text(message)
                else:
                    await ws.send_bytes(message)
        except ConnectionClosed as closed:
            self.closed.append(closed)
            raise
        finally:
            self.open.remove(ws)


def echo_app() -> QuartTrio:
    """A tiny quart-trio app to check bodies and queries cross the ASGI bridge."""
    app = QuartTrio("transport-tests")

    @app.route("/echo", methods=["POST"])
    async def echo() -> Any:
        return {"body": await quart_request.get_json(), "q": quart_request.args.get("q")}

    @app.route("/hello")
    async def hello() -> Any:
        return {"hello": "world"}

    return app


@attrs.define
class Front:
    listener: FrontListener
    address: str
    metrics: Metrics

    @property
    def ws_url(self) -> str:
        return f"ws://{self.address}"

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])


StartFront = Callable[..., Awaitable[Front]]


async def start_front(
    nursery: trio.Nursery, *, app: Any = None, handlers: Handlers | None = None,
    keepalive_s: float = 25.0, close_timeout_s: float = 2.0, **limit_values: Any,
) -> Front:
    metrics = Metrics()
    listener = FrontListener(limits(**limit_values), metrics, app=app, handlers=handlers,
                             keepalive_s=keepalive_s, close_timeout_s=close_timeout_s)
    address = await nursery.start(listener.serve, "127.0.0.1", 0)
    return Front(listener, address, metrics)


async def raw_connect(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def receive_all(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def read_responses(stream: trio.SocketStream, count: int) -> list[tuple[h11.Response, bytes]]:
    """Read `count` HTTP responses from a raw stream with h11's client side."""
    conn = h11.Connection(h11.CLIENT)
    # h11 only parses responses to requests it saw; tell it about `count` GETs.
    out: list[tuple[h11.Response, bytes]] = []
    for _ in range(count):
        conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        head: h11.Response | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise AssertionError("server closed before the response ended")
        assert head is not None
        out.append((head, body))
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            break
    return out


async def wait_until(predicate: Callable[[], bool], limit_s: float = 5.0) -> None:
    """Poll `predicate` (cheap, in-process state) until true, or fail after `limit_s`."""
    with trio.fail_after(limit_s):
        while True:
            if predicate():
                return
            await trio.sleep(0.005)


def handshake_bytes(path: str, port: int) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def tiny_receive_buffer(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
