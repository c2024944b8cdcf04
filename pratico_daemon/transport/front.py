"""The front listener: one port for HTTP/1.1 and WebSockets, on trio and h11.

Routes:
- `GET /sockets/` with `Upgrade: websocket` → Socket.IO framing, and
  `GET /ws/{namespace}` with `Upgrade: websocket` → plain-JSON framing: the
  handshake is completed here, then `await handlers.websocket(ws, request)`.
- any other request on `/sockets/` (Engine.IO long-polling) →
  `await handlers.polling(request, body)`, which returns a `Response`.
- everything else → the quart-trio app through the ASGI bridge.

Resources and errors: each accepted socket runs in its own task inside the
listener's nursery and never lets an exception out (a broken client is logged
and dropped, never a crash). The request head must arrive within
`limits.handshake_timeout_s`, and a request body is capped at
`limits.max_snapshot_bytes` plus a margin for the JSON around a snapshot.
Garbage is answered 400, an oversized body 413, a refused handshake 503, each
with the daemon's JSON error body. A WebSocket's handler (which reads) runs in the
connection's task; its writer task, started only while frames wait for a
writable socket, runs in the listener's nursery and is stopped before the
connection's task closes the socket.

`drain()` stops accepting, lets the session layer say goodbye
(`handlers.drain`), closes every WebSocket with 1001 "server shutting down,
reconnect" and waits for them to go.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import itertools
import random
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import attrs
import h11
import trio

from pratico_daemon import logs
from pratico_daemon.config import KIB, LimitsSection
from pratico_daemon.metrics import Metrics
from pratico_daemon.transport import frames
from pratico_daemon.transport.asgi import AsgiApp, AsgiBridge
from pratico_daemon.transport.http import Request, Response, parse_request
from pratico_daemon.transport.websocket import (
    ConnectionClosed,
    Counters,
    Framing,
    OutboxLimits,
    WebSocket,
)

log = logs.get("transport")

WebSocketHandler = Callable[[WebSocket, Request], Awaitable[None]]
PollingHandler = Callable[[Request, bytes], Awaitable[Response]]

# A request head (request line + headers) larger than this is refused with 400;
# browsers send 1-4 KiB, and a JWT in the query stays well under 8 KiB.
MAX_HEAD_BYTES = 16 * KIB
# Room for the JSON around a snapshot in a REST body (ids, title, params).
BODY_MARGIN_BYTES = 64 * KIB
# How long a closing handshake may take before the TCP connection is just closed.
CLOSE_TIMEOUT_S = 2.0
# How often byte/message totals are copied into Prometheus counters.
METRICS_FLUSH_S = 1.0
_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_SERVER_HEADER = ("server", "pratico-daemon")


async def refuse_polling(request: Request, body: bytes) -> Response:
    """Default until the session layer serves Engine.IO long-polling (PROTOCOL.md §1a)."""
    return Response.error(400, "invalid_payload", "only the websocket transport is served")


async def refuse_websocket(ws: WebSocket, request: Request) -> None:
    """Default until a session layer is installed: close at once with 1013 (try again later)."""
    await ws.aclose(frames.TRY_AGAIN_LATER, "no session layer serves this endpoint")


@attrs.frozen
class Handlers:
    """What the session layer plugs into the front listener.

    `websocket(ws, request)` runs for the connection's whole life and is its
    reader (it calls `ws.receive()`); when it returns the connection is closed
    with 1000 if still open, when it raises, with 1011. `polling(request, body)`
    answers Engine.IO long-polling requests on `/sockets/`. `drain()`, if set,
    is awaited by `FrontListener.drain()` before the 1001 closes, so sessions
    can send their own goodbye (an Engine.IO close packet, say).
    """

    websocket: WebSocketHandler = refuse_websocket
    polling: PollingHandler = refuse_polling
    drain: Callable[[], Awaitable[None]] | None = None


@attrs.frozen
class FrontStatistics:
    socketio_open: int  # WebSockets open, by framing
    json_open: int
    tcp_open: int  # every accepted TCP connection, upgraded or not
    bytes_in: int  # HTTP and WebSocket bytes, headers included
    bytes_out: int
    messages_in: int  # WebSocket messages
    messages_out: int
    slow_consumer_disconnects: int
    oversized_messages: int  # closed with 1009
    refused_handshakes: int  # answered 503 (limits or draining)
    handshake_timeouts: int  # request heads not complete within handshake_timeout_s
    draining: bool

    @property
    def websockets_open(self) -> int:
        return self.socketio_open + self.json_open


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


class FrontListener:
    """Serves one TCP port: `await nursery.start(front.serve, host, port)` → "host:port"."""

    def __init__(
        self,
        limits: LimitsSection,
        metrics: Metrics,
        *,
        app: AsgiApp | None,
        handlers: Handlers | None = None,
        keepalive_s: float = 25.0,
        close_timeout_s: float = CLOSE_TIMEOUT_S,
    ) -> None:
        self.limits = limits
        self.metrics = metrics
        self.handlers = handlers or Handlers()
        self._bridge = AsgiBridge(app) if app is not None else None
        self._keepalive_s = keepalive_s
        self._close_timeout_s = close_timeout_s
        self._body_limit = limits.max_snapshot_bytes + BODY_MARGIN_BYTES
        self._outbox_limits = OutboxLimits(limits.outbox_messages, limits.outbox_bytes)
        self._counters: dict[str, Counters] = {
            "socketio": Counters(), "json": Counters(), "http": Counters()
        }
        self._flushed: dict[str, Counters] = {k: Counters() for k in self._counters}
        self._websockets: set[WebSocket] = set()
        self._per_ip: dict[str, int] = {}
        self._tcp_open = 0
        self._slow_consumers = 0
        self._oversized = 0
        self._handshake_timeouts = 0
        self._refused = 0
        self._ids = itertools.count(1)
        self._draining = False
        self._accept_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None  # connections and writers; set by serve()
        self._changed = trio.Event()
        self._last_refusal_log = 0.0
        self.address: str | None = None

    def __repr__(self) -> str:
        state = "DRAINING" if self._draining else "SERVING" if self.address else "NEW"
        return f"<FrontListener {self.address} {state} {len(self._websockets)} websockets>"

    # ------------------------------------------------------------ public

    def statistics(self) -> FrontStatistics:
        by = {"socketio": 0, "json": 0}
        for ws in self._websockets:
            by[ws.framing] += 1
        totals = Counters()
        for c in self._counters.values():
            totals.bytes_in += c.bytes_in
            totals.bytes_out += c.bytes_out
            totals.messages_in += c.messages_in
            totals.messages_out += c.messages_out
        return FrontStatistics(
            socketio_open=by["socketio"], json_open=by["json"], tcp_open=self._tcp_open,
            bytes_in=totals.bytes_in, bytes_out=totals.bytes_out,
            messages_in=totals.messages_in, messages_out=totals.messages_out,
            slow_consumer_disconnects=self._slow_consumers, oversized_messages=self._oversized,
            refused_handshakes=self._refused, handshake_timeouts=self._handshake_timeouts,
            draining=self._draining,
        )

    def websockets(self) -> list[WebSocket]:
        """The open WebSocket connections (a copy)."""
        return list(self._websockets)

    async def serve(
        self, host: str, port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind, start the app's lifespan, report "host:port", and serve until cancelled."""
        listener = _bind(host, port)
        bound_port = listener.getsockname()[1]
        self.address = f"[{host}]:{bound_port}" if ":" in host else f"{host}:{bound_port}"
        server = (host, bound_port)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._bridge is not None:
                    await nursery.start(self._bridge.lifespan)
                nursery.start_soon(self._keepalive_loop)
                nursery.start_soon(self._metrics_loop)
                task_status.started(self.address)
                log.info("front listener on %s", self.address)
                with trio.CancelScope() as self._accept_scope:
                    await self._accept_loop(listener, nursery, server)
                trio.lowlevel.notify_closing(listener)
                listener.close()
                await trio.sleep_forever()  # serve what is open until our owner cancels
        finally:
            if listener.fileno() != -1:
                trio.lowlevel.notify_closing(listener)
                listener.close()
            self._flush_metrics()

    async def drain(self) -> None:
        """Stop accepting, let sessions say goodbye, close WebSockets with 1001, wait."""
        self._draining = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        if self.handlers.drain is not None:
            try:
                await self.handlers.drain()
            except Exception:
                log.exception("session layer drain hook failed")
        log.info("closing %d websockets with 1001", len(self._websockets))
        for ws in list(self._websockets):
            ws.close(frames.GOING_AWAY, "server shutting down, reconnect")
        while self._websockets:
            await self._wait_changed()

    # ------------------------------------------------------------ accept

    async def _accept_loop(
        self, listener: socket.socket, nursery: trio.Nursery, server: tuple[str, int]
    ) -> None:
        while True:
            await trio.lowlevel.wait_readable(listener)
            try:
                sock, addr = listener.accept()
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno in _ACCEPT_RETRY_ERRNOS:
                    log.error("accept failed (%s); retrying in 100 ms", errno.errorcode[exc.errno])
                    await trio.sleep(0.1)
                continue
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(self._connection, sock, (addr[0], addr[1]), server)

    async def _connection(
        self, sock: socket.socket, client: tuple[str, int], server: tuple[str, int]
    ) -> None:
        """One TCP connection from accept to close; nothing escapes it but cancellation."""
        self._tcp_open += 1
        try:
            websocket = await self._serve_http(sock, client, server)
            if websocket is not None:
                # A WebSocket's life runs here, once the HTTP code has returned:
                # its frames held the h11 connection and the request head for the
                # connection's life (~2 KB per connection, bench/gateway_bench.py).
                await websocket
        except Exception:
            log.exception("connection from %s failed", client[0], extra={"peer": client[0]})
        finally:
            self._tcp_open -= 1
            trio.lowlevel.notify_closing(sock)
            sock.close()

    # ------------------------------------------------------------ HTTP

    async def _serve_http(
        self, sock: socket.socket, client: tuple[str, int], server: tuple[str, int]
    ) -> Coroutine[Any, Any, None] | None:
        """Serve HTTP requests until the connection ends or upgrades: then the
        WebSocket's life, for the caller to run."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        counters = self._counters["http"]
        while True:
            try:
                with trio.move_on_after(self.limits.handshake_timeout_s) as timer:
                    event = await self._next_event(sock, conn, counters)
                if timer.cancelled_caught:
                    # A keep-alive connection with nothing pending ends quietly.
                    if conn.their_state is not h11.IDLE or conn.trailing_data[0]:
                        self._handshake_timeouts += 1
                        log.info("request head from %s timed out", client[0],
                                 extra={"peer": client[0]})
                    return None
                if not isinstance(event, h11.Request):
                    return None  # the client closed its keep-alive connection
                request = parse_request(event.method, event.target, event.headers, client)
                route = _websocket_route(request)
                if route is not None:
                    return await self._upgrade(sock, conn, request, route, counters)
                body = await self._read_body(sock, conn, request, counters)
                response = await self._respond(request, body, server)
            except h11.RemoteProtocolError as exc:
                response = Response.error(
                    exc.error_status_hint, "invalid_payload", f"bad HTTP request: {exc}"
                )
                await self._write_response(sock, conn, response, counters, close=True)
                return None
            except _Refused as refused:
                await self._write_response(sock, conn, refused.response, counters, close=True)
                return None
            keep = await self._write_response(
                sock, conn, response, counters, close=self._draining, head=request.method == "HEAD"
            )
            if not keep or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return None
            conn.start_next_cycle()

    async def _next_event(
        self, sock: socket.socket, conn: h11.Connection, counters: Counters
    ) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await _recv(sock, counters))

    async def _read_body(
        self, sock: socket.socket, conn: h11.Connection, request: Request, counters: Counters
    ) -> bytes:
        declared = request.header("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._body_limit:
            raise _Refused(self._too_large())
        chunks: list[bytes] = []
        size = 0
        while True:
            with trio.move_on_after(self.limits.handshake_timeout_s) as timer:
                event = await self._next_event(sock, conn, counters)
            if timer.cancelled_caught:
                raise _Refused(Response.error(408, "invalid_payload", "request body timed out"))
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self._body_limit:
                    raise _Refused(self._too_large())
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                raise _Refused(Response.error(400, "invalid_payload", "incomplete request"))

    def _too_large(self) -> Response:
        return Response.error(
            413, "payload_too_large", f"request body over {self._body_limit} bytes"
        )

    async def _respond(self, request: Request, body: bytes, server: tuple[str, int]) -> Response:
        if _is_sockets_path(request.path):
            return await self.handlers.polling(request, body)
        if self._bridge is None:
            return Response.error(404, "not_found", "no such endpoint")
        return await self._bridge.handle(request, body, server)

    async def _write_response(
        self, sock: socket.socket, conn: h11.Connection, response: Response,
        counters: Counters, *, close: bool, head: bool = False,
    ) -> bool:
        """Send `response`; returns whether the connection may serve another request."""
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return False
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
            _SERVER_HEADER,
            *response.headers,
        ]
        if close:
            headers.append(("connection", "close"))
        try:
            data = conn.send(h11.Response(status_code=response.status, headers=headers))
            if not head:
                data += conn.send(h11.Data(data=response.body))
            data += conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            log.exception("could not frame a %d response", response.status)
            return False
        await _send_all(sock, data, counters)
        return not close

    # ------------------------------------------------------------ WebSocket

    async def _upgrade(
        self, sock: socket.socket, conn: h11.Connection, request: Request,
        route: tuple[Framing, str | None], counters: Counters,
    ) -> Coroutine[Any, Any, None]:
        """Answer the handshake (101); the WebSocket's life, not started yet."""
        end = None
        with trio.move_on_after(self.limits.handshake_timeout_s):
            end = await self._next_event(sock, conn, counters)
        if not isinstance(end, h11.EndOfMessage):
            raise _Refused(Response.error(400, "invalid_payload", "a handshake has no body"))
        accept = self._check_handshake(request)
        data = conn.send(h11.InformationalResponse(status_code=101, headers=[
            ("upgrade", "websocket"), ("connection", "Upgrade"),
            ("sec-websocket-accept", accept), _SERVER_HEADER,
        ]))
        await _send_all(sock, data, counters)
        leftover, _ = conn.trailing_data
        framing, namespace = route
        assert self._nursery is not None
        ws = WebSocket(
            sock, writers=self._nursery, conn_id=f"c{next(self._ids)}", framing=framing,
            namespace=namespace,
            remote=request.client, max_message_bytes=self.limits.max_message_bytes,
            outbox=self._outbox_limits, counters=self._counters[framing],
            on_limit=self._count_limit, initial_data=bytes(leftover),
            close_timeout_s=self._close_timeout_s,
        )
        return self._run_websocket(ws, request)

    def _check_handshake(self, request: Request) -> str:
        """Validate an upgrade request against RFC 6455 and our limits; the accept key."""
        if request.method != "GET":
            raise _Refused(Response.error(400, "invalid_payload", "a handshake is a GET"))
        if request.header("sec-websocket-version") != "13":
            raise _Refused(Response(
                426, b'{"error":{"code":"invalid_payload","message":"WebSocket version 13 only"}}',
                "application/json", (("sec-websocket-version", "13"),)))
        key = request.header("sec-websocket-key", "") or ""
        try:
            valid = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            valid = False
        if not valid:
            raise _Refused(Response.error(400, "invalid_payload", "bad Sec-WebSocket-Key"))
        reason = None
        if self._draining:
            reason = "server shutting down, reconnect"
        elif len(self._websockets) >= self.limits.max_connections:
            reason = "too many connections"
        elif self._per_ip.get(request.client_ip, 0) >= self.limits.max_connections_per_ip:
            reason = "too many connections from this address"
        if reason is not None:
            self._refused += 1
            self.metrics.errors.labels("unavailable").inc()
            self._log_refusal(reason, request.client_ip)
            raise _Refused(Response.error(503, "unavailable", reason))
        return base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest()).decode()

    def _log_refusal(self, reason: str, ip: str) -> None:
        now = time.monotonic()
        if now - self._last_refusal_log >= 1.0:  # at most one line a second under a flood
            self._last_refusal_log = now
            log.warning("handshake refused: %s (%d refused so far)", reason, self._refused,
                        extra={"peer": ip, "code": "unavailable"})

    def _count_limit(self, code: str) -> None:
        """A connection hit a limit: "slow_consumer" or "message_too_large"."""
        if code == "slow_consumer":
            self._slow_consumers += 1
            self.metrics.slow_consumer_disconnects.inc()
        else:
            self._oversized += 1
            self.metrics.errors.labels(code).inc()

    async def _run_websocket(self, ws: WebSocket, request: Request) -> None:
        ip = request.client_ip
        self._websockets.add(ws)
        if ws.framing == "json":
            # The first ping comes 1/2 to 1 interval after the handshake, so that
            # clients that connected together are not pinged together (see `_keepalive_loop`).
            ws.keepalive_due = trio.current_time() + random.uniform(
                self._keepalive_s / 2, self._keepalive_s)
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        self.metrics.connections.labels(ws.framing).inc()
        self.metrics.connections_total.labels(ws.framing).inc()
        log.debug("websocket %s open", ws, extra={"conn": ws.id, "peer": ip})
        try:
            # No nursery of its own (~1 KB per connection): the writer task, when
            # one runs, is in the listener's and stopped below.
            try:
                handler = self.handlers.websocket(ws, request)
                # The handler keeps what it needs of the request; our frame would keep
                # the whole head (~1.3 KB from the bench's client, more from a browser).
                del request
                await handler
            except Exception as exc:
                if not _only_closed(exc):
                    log.exception("websocket handler failed", extra={"conn": ws.id})
                    ws.close(frames.INTERNAL_ERROR, "internal error")
            ws.close(frames.NORMAL, "")
            with trio.move_on_after(self._close_timeout_s):
                await ws.finish()
        finally:
            ws.stop_writer()
            self._websockets.discard(ws)
            left = self._per_ip[ip] - 1
            if left:
                self._per_ip[ip] = left
            else:
                del self._per_ip[ip]
            self.metrics.connections.labels(ws.framing).dec()
            log.debug("websocket %s closed (%s)", ws.id, ws.close_code, extra={"conn": ws.id})
            self._notify_changed()

    # ------------------------------------------------------------ background

    async def _keepalive_loop(self) -> None:
        """Protocol pings for /ws/ clients (Engine.IO pings Socket.IO ones itself):
        a client that has not answered the previous ping is closed with 1011.

        Each client is pinged once per interval at its own phase, the loop waking
        8 times per interval: pinging everyone at once made every client's
        messages wait behind hundreds of pings and pongs (a 100 ms spike every
        25 s in the signalling bench with 800 clients).
        """
        tick = min(1.0, self._keepalive_s / 8)
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            for ws in list(self._websockets):
                if now < ws.keepalive_due:
                    continue
                ws.keepalive_due = now + self._keepalive_s
                if not ws.pong_seen:
                    log.info("closing %s: no pong within %.0fs", ws.id, self._keepalive_s,
                             extra={"conn": ws.id})
                    ws.close(frames.INTERNAL_ERROR, "keepalive ping timeout")
                else:
                    ws.ping_nowait()

    async def _metrics_loop(self) -> None:
        while True:
            await trio.sleep(METRICS_FLUSH_S)
            self._flush_metrics()

    def _flush_metrics(self) -> None:
        m = self.metrics
        for framing, now in self._counters.items():
            was = self._flushed[framing]
            if now.bytes_in > was.bytes_in:
                m.bytes_in.inc(now.bytes_in - was.bytes_in)
            if now.bytes_out > was.bytes_out:
                m.bytes_out.inc(now.bytes_out - was.bytes_out)
            if framing != "http":
                if now.messages_in > was.messages_in:
                    m.messages_in.labels(framing).inc(now.messages_in - was.messages_in)
                if now.messages_out > was.messages_out:
                    m.messages_out.labels(framing).inc(now.messages_out - was.messages_out)
            self._flushed[framing] = attrs.evolve(now)

    def _notify_changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_changed(self) -> None:
        await self._changed.wait()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family, backlog=1024)
    listener.setblocking(False)
    return listener


async def _recv(sock: socket.socket, counters: Counters) -> bytes:
    while True:
        try:
            data = sock.recv(64 * KIB)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            continue
        except OSError:
            return b""
        counters.bytes_in += len(data)
        return data


async def _send_all(sock: socket.socket, data: bytes, counters: Counters) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        counters.bytes_out += sent
        view = view[sent:]
    await trio.lowlevel.checkpoint()


def _is_sockets_path(path: str) -> bool:
    return path in ("/sockets/", "/sockets")


def _websocket_route(request: Request) -> tuple[Framing, str | None] | None:
    """(framing, namespace) for a WebSocket upgrade on one of our paths, else None."""
    upgrade = (request.header("upgrade") or "").lower()
    if upgrade != "websocket":
        return None
    if _is_sockets_path(request.path):
        return "socketio", None
    if request.path.startswith("/ws/"):
        namespace = request.path[4:].strip("/")
        if namespace and "/" not in namespace:
            return "json", namespace
    return None


def _only_closed(exc: BaseException) -> bool:
    """True for ConnectionClosed, also inside the session layer's exception groups."""
    if isinstance(exc, ConnectionClosed):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_closed(e) for e in exc.exceptions)
    return False
