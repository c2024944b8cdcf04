"""Real connections to a running daemon: a plain-JSON `/ws/conversation` peer (trio-websocket)."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, connect_websocket_url


class JsonPeer:
    """One `/ws/conversation` connection: `call()` waits for its reply; events are recorded."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.hello: dict[str, Any] | None = None
        self.closed: int | None = None
        self._refs = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._changed = trio.Event()

    @classmethod
    async def open(cls, nursery: trio.Nursery, base: str, token: str) -> JsonPeer:
        ws = await connect_websocket_url(nursery, f"{base}/ws/conversation?token={token}")
        peer = cls(ws)
        nursery.start_soon(peer._read)
        await peer.wait_for(lambda: peer.hello is not None)
        return peer

    async def _read(self) -> None:
        try:
            while True:
                message = orjson.loads(await self.ws.get_message())
                if message.get("type") == "reply":
                    channel = self._waiting.pop(message["ref"], None)
                    if channel is not None:
                        channel.send_nowait(message)
                elif message.get("type") == "connected":
                    self.hello = message
                else:
                    self.events.append(message)
                self._wake()
        except ConnectionClosed as exc:
            self.closed = exc.reason.code
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, condition: Any, within_s: float = 15) -> None:
        with trio.fail_after(within_s):
            while not condition():
                await self._changed.wait()

    async def call(self, name: str, **payload: Any) -> dict[str, Any]:
        ref = next(self._refs)
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._waiting[ref] = send
        await self.ws.send_message(orjson.dumps({"type": name, "ref": ref, **payload}).decode())
        with trio.fail_after(15):
            return await receive.receive()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == name]
