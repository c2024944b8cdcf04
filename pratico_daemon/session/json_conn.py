"""Plain JSON over a WebSocket (PROTOCOL.md §1b): `/ws/{namespace}?token=…`.

One connection is one client of one namespace. After the handshake the server
says who the client is:

    {"type": "connected", "sid": "…", "resume": "<pid>", "recovered": false, …}

Each client frame is `{"type": NAME, "ref": optional, …fields}`; a frame with
a `ref` gets exactly one `{"type": "reply", "ref", "status", "data"}`. Server
events are `{"type": NAME, …payload, "offset": n}`. A client that lost its
connection reconnects with `?resume=<pid>&offset=<last offset seen>` within
`engineio.recovery_window_s` and gets what it missed, with `"recovered": true`
(the JSON equivalent of Socket.IO's connection-state recovery).

Refusals: the connection is accepted, a `{"type": "connect_error", "code",
"message", …}` frame explains, and it closes with 4401 (unauthorized), 4403
(forbidden), 4404 (no such namespace), 4429 (cooldown) or 4400 (anything else).
A frame that is not JSON gets `{"type": "error", "status": "ERROR", "data": …}`
and the connection stays open; a frame over `limits.max_message_bytes` closes it
with 1009 (the WebSocket core enforces that before we see it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
import trio

from pratico_daemon import logs
from pratico_daemon.errors import AppError
from pratico_daemon.protocol import jsonframe
from pratico_daemon.protocol.errors import RemoteProtocolError
from pratico_daemon.rooms.broadcast import Broadcast, Framing
from pratico_daemon.session.client import SessionClient
from pratico_daemon.session.ratelimit import TokenBucket
from pratico_daemon.transport import ConnectionClosed, Request, WebSocket

if TYPE_CHECKING:
    from pratico_daemon.session.gateway import Gateway

log = logs.get("json")

REFUSAL_CLOSE_CODES = {"unauthorized": 4401, "forbidden": 4403, "not_found": 4404,
                       "cooldown": 4429}
_NORMAL = 1000


class JsonConnection:
    framing = Framing.JSON_WS

    def __init__(self, gateway: Gateway, ws: WebSocket, request: Request) -> None:
        self.gateway = gateway
        self.ws = ws
        self.request = request
        self.namespace = "/" + (ws.namespace or "")
        limits = gateway.config.limits
        self.bucket = TokenBucket(limits.rate_per_s, limits.rate_burst, trio.current_time())
        self.client: SessionClient | None = None
        self._goodbye = False

    def __repr__(self) -> str:
        return f"<JsonConnection {self.ws.id} {self.namespace} {self.client}>"

    # -- Conduit -------------------------------------------------------------------------

    def frame_sender(self) -> Callable[[Any], bool]:
        return self.ws.send_frame_nowait

    def send_broadcast(self, broadcast: Broadcast) -> bool:
        return self.ws.send_frame_nowait(broadcast.frame(Framing.JSON_WS))

    def disconnect_client(self, client: SessionClient, reason: str) -> None:
        if client is self.client:
            self._goodbye = True
            self.ws.close(_NORMAL, reason[:100])

    def _send(self, body: dict[str, Any]) -> None:
        self.ws.send_frame_nowait(_frame(body))

    # -- the connection's life -------------------------------------------------------------

    async def run(self) -> None:
        query = self.request.query
        try:
            opened = await self.gateway.open_client(
                self, self.namespace, {}, query, self.request.client_ip, _resume_from(query)
            )
        except AppError as exc:
            self.gateway.refused(exc.code)
            self._send({"type": "connect_error", "code": exc.code, "message": exc.message,
                        **exc.data})
            await self.ws.aclose(REFUSAL_CLOSE_CODES.get(exc.code, 4400), exc.code)
            return
        client = self.client = opened.client
        self._send({"type": "connected", "sid": client.sid, "resume": client.pid,
                    "recovered": opened.recovered, **opened.extra})
        for broadcast in opened.replay:
            self.send_broadcast(broadcast)
        if opened.recovered:
            await self.gateway.recovered(client)
        explicit = False
        try:
            while True:
                frame = await self.ws.receive()
                await self._on_frame(frame)
        except ConnectionClosed as closed:
            goodbye_code = closed.code in (_NORMAL, 1001) and not self.gateway.draining
            explicit = self._goodbye or goodbye_code
        finally:
            await self.gateway.client_lost(client, explicit=explicit, reason="transport close")

    async def _on_frame(self, frame: str | bytes) -> None:
        assert self.client is not None
        limits = self.gateway.config.limits
        try:
            event = jsonframe.decode_frame(frame, self.namespace,
                                           max_bytes=limits.max_message_bytes)
        except RemoteProtocolError as exc:
            self.gateway.refused(exc.code)
            if exc.reply is not None:
                self.ws.send_frame_nowait(_text_frame(exc.reply))
            else:
                self._send({"type": "error", "status": "ERROR",
                            "data": {"code": exc.code, "message": exc.message}})
            return
        if not self.bucket.take(trio.current_time()):
            self.gateway.refused("rate_limited")
            if event.ack is not None:
                self.ws.send_frame_nowait(_text_frame(jsonframe.encode_error_reply(
                    event.ack, "rate_limited", "too many events",
                    retry_after=round(self.bucket.retry_after(), 3))))
            return
        reply = await self.gateway.dispatch(self.client, event)
        if event.ack is not None:
            self.ws.send_frame_nowait(_text_frame(jsonframe.encode_reply(event.ack, reply)))


def _resume_from(query: dict[str, str]) -> tuple[str, int] | None:
    pid = query.get("resume")
    if not pid:
        return None
    try:
        return pid, int(query.get("offset") or 0)
    except ValueError:
        return None


def _text_frame(text: str) -> bytes:
    from pratico_daemon.transport.frames import encode_text_frame

    return encode_text_frame(text)


def _frame(body: dict[str, Any]) -> bytes:
    return _text_frame(orjson.dumps(body).decode())
