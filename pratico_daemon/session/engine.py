"""Socket.IO over Engine.IO v4: one `EngineConnection` per Engine.IO session.

Theory of operation
-------------------
The sans-IO `EngineIOSession` (protocol/engineio.py) decides; this class does
the I/O it asks for. A session starts either on a WebSocket (`/sockets/?EIO=4
&transport=websocket`: the open packet goes out on it) or with an HTTP GET
(`transport=polling`, socket.io-client's default: the open packet is that
GET's answer, and later GETs long-poll for queued packets while POSTs carry
the client's packets). A polling session may upgrade: the client opens a
WebSocket with `sid=…`, probes it (`2probe` → `3probe`, and a noop ends the
pending GET), then sends `5`; from then on everything goes over the
WebSocket, starting with whatever was still queued for polling.

Outgoing packets therefore have two routes: `WebSocket.send_frame_nowait`
(never blocks; a slow consumer is cut off by the transport) or the bounded
polling queue (a client that stops polling overflows it and is closed the
same way). Broadcasts arrive pre-encoded for either route.

Socket.IO namespaces multiplex on one session: each CONNECT makes a
`SessionClient` via the gateway, which also answers events. The heartbeat
(server pings every `ping_interval_s`, the client must pong within
`ping_timeout_s`) runs in the gateway's nursery for the session's life.
How the session ends decides what the products hear: a client's `1` close or
`41` disconnect is a goodbye (`gone` at once); anything else (TCP reset, ping
timeout, slow consumer) leaves the clients recoverable for the window.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import trio

from pratico_daemon import logs
from pratico_daemon.errors import AppError
from pratico_daemon.protocol import engineio, socketio
from pratico_daemon.protocol.engineio import (
    Closed,
    Deliver,
    EngineIOSession,
    Send,
    Transport,
    Upgraded,
)
from pratico_daemon.protocol.errors import RemoteProtocolError
from pratico_daemon.protocol.event import Event, error
from pratico_daemon.rooms.broadcast import Broadcast, Framing
from pratico_daemon.session.client import SessionClient
from pratico_daemon.session.gateway import new_id
from pratico_daemon.session.ratelimit import TokenBucket
from pratico_daemon.transport import ConnectionClosed, Request, Response, WebSocket
from pratico_daemon.transport.frames import encode_text_frame

if TYPE_CHECKING:
    from pratico_daemon.session.gateway import Gateway

log = logs.get("engineio")

# RFC 6455 close codes we use here.
_NORMAL = 1000
_POLICY = 1008
_SLOW_CONSUMER = 4008


class EngineConnection:
    """One Engine.IO session and the Socket.IO clients it carries."""

    # One per connection: slots instead of a dict (bench/gateway_bench.py).
    __slots__ = (
        "_goodbye",
        "_polling_busy",
        "_queue",
        "_queue_changed",
        "_queue_limit",
        "_upgrade_ws",
        "bucket",
        "clients",
        "closed",
        "eio",
        "gateway",
        "origin",
        "query",
        "remote",
        "sid",
        "ws",
    )

    def __init__(self, gateway: Gateway, request: Request, transport: Transport) -> None:
        cfg = gateway.config
        self.gateway = gateway
        # Keep only what later packets need: the handshake objects would cost ~3 KB
        # per idle connection (bench/gateway_bench.py).
        self.query = request.query
        self.origin = request.header("origin")
        self.remote = request.client_ip
        interval = cfg.engineio.ping_interval_s
        self.eio = EngineIOSession(
            new_id(),
            now=trio.current_time(),
            transport=transport,
            ping_interval_s=interval,
            ping_timeout_s=cfg.engineio.ping_timeout_s,
            max_payload_bytes=cfg.engineio.max_payload_bytes,
            # Sessions opened together are not pinged together (the gateway's
            # heartbeat would send hundreds of pings in one tick; front.py has why).
            first_ping_s=random.uniform(interval / 2, interval),
        )
        self.sid = self.eio.sid
        self.ws: WebSocket | None = None
        self.clients: dict[str, SessionClient] = {}
        self.bucket = TokenBucket(cfg.limits.rate_per_s, cfg.limits.rate_burst, trio.current_time())
        self._queue: collections.deque[str] | None = None  # polling only, made on first use
        self._queue_limit = cfg.limits.outbox_messages
        self._queue_changed: trio.Event | None = None  # set while a GET waits
        self._polling_busy = False
        self._upgrade_ws: WebSocket | None = None
        self.closed = False
        self._goodbye = False

    def __repr__(self) -> str:
        return (f"<EngineConnection {self.sid} {self.eio.state.name} {self.eio.transport.value} "
                f"{len(self.clients)} namespaces>")

    # -- construction ------------------------------------------------------------------

    @classmethod
    def over_websocket(cls, gateway: Gateway, ws: WebSocket, request: Request) -> EngineConnection:
        engine = cls(gateway, request, Transport.WEBSOCKET)
        engine.ws = ws
        return engine

    @classmethod
    def over_polling(cls, gateway: Gateway, request: Request) -> EngineConnection:
        return cls(gateway, request, Transport.POLLING)

    def _register(self) -> None:
        """Known to the gateway: found by `sid` (polling, upgrade) and pinged by its heartbeat."""
        self.gateway.engines[self.sid] = self
        self.gateway.watch_heartbeat(self)

    # -- the Conduit side (what clients and rooms call) ------------------------------------

    @property
    def framing(self) -> Framing:
        if self.ws is not None:
            return Framing.SOCKETIO_WS
        return Framing.SOCKETIO_POLLING

    def frame_sender(self) -> Callable[[Any], bool]:
        if self.ws is not None:
            return self.ws.send_frame_nowait
        return self._enqueue

    def send_broadcast(self, broadcast: Broadcast) -> bool:
        if self.ws is not None:
            return self.ws.send_frame_nowait(broadcast.frame(Framing.SOCKETIO_WS))
        return self._enqueue(broadcast.frame(Framing.SOCKETIO_POLLING))

    def send_text(self, text: str) -> bool:
        """One Engine.IO packet (already with its type digit) on the current transport."""
        if self.ws is not None:
            return self.ws.send_frame_nowait(encode_text_frame(text))
        return self._enqueue(text)

    def disconnect_client(self, client: SessionClient, reason: str) -> None:
        """Server-side disconnect of one namespace: `41/ns,`, then the client is gone."""
        if self.clients.get(client.namespace) is not client:
            return
        self.send_text(socketio.encode_disconnect_frame(client.namespace))
        del self.clients[client.namespace]
        self.gateway.lose_soon(client, explicit=True, reason=reason)

    def _enqueue(self, text: str) -> bool:
        if self.closed:
            return False
        queue = self._queue
        if queue is None:
            queue = self._queue = collections.deque()
        if len(queue) >= self._queue_limit:
            log.warning("closing %s: slow consumer (polling queue full)", self.sid,
                        extra={"conn": self.sid, "code": "slow_consumer", "peer": self.remote})
            self.gateway.services.metrics.slow_consumer_disconnects.inc()
            queue.clear()
            self._end("slow consumer", explicit=False)
            return False
        queue.append(text)
        self._wake_poll()
        return True

    def _wake_poll(self) -> None:
        if self._queue_changed is not None:
            self._queue_changed.set()

    # -- WebSocket transport -----------------------------------------------------------

    def run_websocket(self) -> Coroutine[Any, Any, None]:
        """A session born on a WebSocket: open packet, then (awaited) read until the end.

        Not itself a coroutine: its frame would sit under the reader's for the
        connection's life (~300 B per connection, bench/gateway_bench.py).
        """
        assert self.ws is not None
        self._register()
        self.ws.send_frame_nowait(encode_text_frame(self.eio.open_packet()))
        return self._read_websocket(self.ws)

    async def run_upgrade(self, ws: WebSocket) -> None:
        """A WebSocket that upgrades this polling session (`sid=` in its URL)."""
        if self.ws is not None or self._upgrade_ws is not None or self.closed:
            await ws.aclose(_POLICY, "session already upgraded or closed")
            return
        self._upgrade_ws = ws
        await self._read_websocket(ws)

    async def _read_websocket(self, ws: WebSocket) -> None:
        explicit = False
        try:
            while not self.closed:
                frame = await ws.receive()
                try:
                    actions = self.eio.receive_frame(
                        frame, trio.current_time(), transport=Transport.WEBSOCKET
                    )
                except RemoteProtocolError as exc:
                    log.info("closing %s: %s", self.sid, exc.message, extra={"conn": self.sid})
                    ws.close(exc.close_code or _POLICY, exc.message[:100])
                    break
                for action in actions:
                    if isinstance(action, Closed):
                        explicit = True
                    await self._act(action, ws)
        except ConnectionClosed as closed:
            explicit = explicit or (closed.code == _NORMAL and self._goodbye)
        finally:
            if ws is self.ws:
                self._end("transport close", explicit=explicit)
            elif ws is self._upgrade_ws:  # a failed upgrade: polling carries on
                self._upgrade_ws = None

    # -- polling transport ---------------------------------------------------------------

    def handshake_response(self) -> Response:
        self._register()
        return self._text_response(self.eio.open_packet())

    async def poll(self) -> Response:
        """A long-polling GET: answer with what is queued, waiting for something if need be."""
        if self.ws is not None:
            return Response.error(400, "invalid_payload", "session was upgraded to websocket")
        if self._polling_busy:
            self._end("overlapping polls", explicit=False)
            return Response.error(400, "invalid_payload", "one GET at a time per session")
        self._polling_busy = True
        try:
            while not self._queue and not self.closed and self.ws is None:
                self._queue_changed = trio.Event()
                await self._queue_changed.wait()
            self._queue_changed = None
            if self._queue:
                packets = list(self._queue)
                self._queue.clear()
                return self._text_response(engineio.RECORD_SEPARATOR.join(packets))
            # Closed, or moved to the WebSocket while this GET waited.
            return self._text_response("6" if self.ws is not None else "1")
        finally:
            self._polling_busy = False

    async def post(self, body: bytes) -> Response:
        """A polling POST: the client's packets (several, separated by \\x1e)."""
        if self.closed:
            return Response.error(400, "invalid_payload", "session closed")
        try:
            actions = self.eio.receive_payload(body, trio.current_time())
        except RemoteProtocolError as exc:
            self._end(exc.message, explicit=False)
            return Response.error(400, exc.code, exc.message)
        for action in actions:
            if isinstance(action, Closed):
                self._goodbye = True
            await self._act(action, None)
        return self._text_response("ok")

    def _text_response(self, text: str) -> Response:
        headers: list[tuple[str, str]] = []
        origin = self.origin
        if origin:  # browsers: allow the page's own origin, with cookies
            headers += [("access-control-allow-origin", origin),
                        ("access-control-allow-credentials", "true")]
        return Response(200, text.encode(), "text/plain; charset=UTF-8", tuple(headers))

    # -- actions of the state machine -----------------------------------------------------

    async def _act(self, action: Any, ws: WebSocket | None) -> None:
        if isinstance(action, Deliver):
            await self._on_message(action.data)
        elif isinstance(action, Send):
            if action.transport is Transport.WEBSOCKET and ws is not None:
                ws.send_frame_nowait(encode_text_frame(action.frame))
            elif action.transport is Transport.POLLING:
                self._enqueue(action.frame)
        elif isinstance(action, Upgraded):
            self._switch_to(ws)
        elif isinstance(action, Closed):
            self._goodbye = True
            self._end(action.reason, explicit=True)

    def _switch_to(self, ws: WebSocket | None) -> None:
        assert ws is not None
        self.ws = ws
        self._upgrade_ws = None
        pending = list(self._queue or ())
        self._queue = None
        for text in pending:
            ws.send_frame_nowait(encode_text_frame(text))
        for client in self.clients.values():
            client.attach(self)  # framing changes from polling to websocket
        self._wake_poll()  # a GET still waiting returns ("6": the session moved)

    # -- Socket.IO packets -------------------------------------------------------------

    async def _on_message(self, data: str | bytes) -> None:
        limits = self.gateway.config.limits
        try:
            if isinstance(data, bytes):
                raise RemoteProtocolError("binary_not_supported", "binary messages are refused")
            packet = socketio.decode_packet(data, max_bytes=limits.max_message_bytes)
        except RemoteProtocolError as exc:
            self.gateway.refused(exc.code)
            if exc.reply is not None:
                self.send_text(exc.reply)
            elif exc.close_code is not None:
                self._close_with(exc.close_code, exc.message)
            else:
                log.info("dropped a packet from %s: %s", self.sid, exc.message,
                         extra={"conn": self.sid, "code": exc.code})
            return
        if isinstance(packet, socketio.Connect):
            await self._on_connect(packet)
        elif isinstance(packet, Event):
            await self._on_event(packet)
        elif isinstance(packet, socketio.Disconnect):
            client = self.clients.pop(packet.namespace, None)
            if client is not None:
                await self.gateway.client_lost(client, explicit=True, reason="client disconnect")
        # ACKs from the client answer server events that asked for none; ignored.

    async def _on_connect(self, packet: socketio.Connect) -> None:
        ns = packet.namespace
        auth = packet.data if isinstance(packet.data, dict) else {}
        if ns in self.clients:
            self.send_text(socketio.encode_connect_error_frame(ns, "conflict", "already connected"))
            return
        resume = _resume_from(auth)
        try:
            opened = await self.gateway.open_client(
                self, ns, auth, self.query, self.remote, resume
            )
        except AppError as exc:
            self.gateway.refused(exc.code)
            message = exc.message if exc.code != "not_found" else "Invalid namespace"
            self.send_text(socketio.encode_connect_error_frame(ns, exc.code, message, **exc.data))
            return
        client = opened.client
        self.clients[ns] = client
        self.send_text(socketio.encode_connect_frame(ns, client.sid, pid=client.pid,
                                                     **opened.extra))
        for broadcast in opened.replay:
            self.send_broadcast(broadcast)
        if opened.recovered:
            await self.gateway.recovered(client)

    async def _on_event(self, event: Event) -> None:
        client = self.clients.get(event.namespace)
        if client is None:
            if event.ack is not None:
                self.send_text(socketio.encode_ack_frame(
                    event.namespace, int(event.ack),
                    error("forbidden", "connect to the namespace first")))
            return
        now = trio.current_time()
        if not self.bucket.take(now):
            self.gateway.refused("rate_limited")
            if event.ack is not None:
                retry = round(self.bucket.retry_after(), 3)
                self.send_text(socketio.encode_ack_frame(
                    event.namespace, int(event.ack),
                    error("rate_limited", "too many events", retry_after=retry)))
            return
        reply = await self.gateway.dispatch(client, event)
        if event.ack is not None:
            self.send_text(socketio.encode_ack_frame(event.namespace, int(event.ack), reply))

    # -- heartbeat and the end ---------------------------------------------------------

    def heartbeat(self, now: float) -> None:
        """Called by the gateway's heartbeat task: ping when due, end on a missed pong."""
        eio = self.eio
        if eio.timed_out(now):
            log.info("closing %s: ping timeout", self.sid, extra={"conn": self.sid})
            self._end("ping timeout", explicit=False)
        elif eio.ping_due(now):
            self.send_text(eio.send_ping(now))

    def going_away(self) -> None:
        """Drain: ask the client to reconnect (Engine.IO close for polling; 1001 for WS)."""
        if self.ws is None and not self.closed:
            self._enqueue("1")
        self._end("server shutting down", explicit=False)

    def _close_with(self, code: int, reason: str) -> None:
        if self.ws is not None:
            self.ws.close(code, reason[:100])
        self._end(reason, explicit=False)

    def _end(self, reason: str, *, explicit: bool) -> None:
        """Close the session once; tell the gateway what happened to each client."""
        if self.closed:
            return
        self.closed = True
        self._wake_poll()
        if self.eio.state is not engineio.SessionState.CLOSED:
            self.eio.close(reason)
        self.gateway.engines.pop(self.sid, None)
        if self.ws is not None and not explicit:
            self.ws.close(_SLOW_CONSUMER if reason == "slow consumer" else 1001
                          if reason == "server shutting down" else _NORMAL, reason[:100])
        for client in list(self.clients.values()):
            self.gateway.lose_soon(client, explicit=explicit, reason=reason)
        self.clients.clear()


def _resume_from(auth: dict[str, Any]) -> tuple[str, int] | None:
    """socket.io-client sends `{pid, offset}` in CONNECT when it wants its state back."""
    pid, offset = auth.get("pid"), auth.get("offset")
    if not isinstance(pid, str) or not pid:
        return None
    try:
        return pid, int(offset) if offset is not None else 0
    except (TypeError, ValueError):
        return None


