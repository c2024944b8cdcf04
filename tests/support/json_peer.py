"""A plain-JSON WebSocket peer (PROTOCOL.md §1b) for end-to-end tests on a real port."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream


class JsonPeer:
    """One `/ws/{namespace}` connection: `call()` waits for the reply; events are recorded.

    Subclasses name their namespace. The peer owns its TCP stream, so it is
    closed however the connection ends (see tests/support/ws.py for why).
    """

    namespace = "pratico"

    def __init__(self, ws: WebSocketConnection, stream: trio.SocketStream) -> None:
        self.ws = ws
        self._stream = stream
        self.events: list[dict[str, Any]] = []
        self.hello: dict[str, Any] | None = None
        self.closed: int | None = None
        self._refs = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._changed = trio.Event()

    @classmethod
    async def open(cls, nursery: trio.Nursery, base: str, token: str | None = None
                   ) -> JsonPeer:
        host, _, port = base.removeprefix("ws://").partition(":")
        resource = f"/ws/{cls.namespace}" + (f"?token={token}" if token else "")
        # Our own TCP stream, so that it is closed however the connection ends.
        stream = await trio.open_tcp_stream(host, int(port))
        ws = await wrap_client_stream(nursery, stream, host, resource)
        peer = cls(ws, stream)
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
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await self.ws.aclose()
                await self._stream.aclose()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, condition: Any, seconds: float = 15) -> None:
        with trio.fail_after(seconds):
            while not condition():
                await self._changed.wait()

    async def call(self, name: str, **payload: Any) -> dict[str, Any]:
        """The whole reply: `{"status", "data"}`."""
        ref = next(self._refs)
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._waiting[ref] = send
        await self.ws.send_message(orjson.dumps({"type": name, "ref": ref, **payload}).decode())
        with trio.fail_after(15):
            return await receive.receive()

    async def ok(self, name: str, **payload: Any) -> dict[str, Any]:
        reply = await self.call(name, **payload)
        assert reply["status"] == "SUCCESS", (name, reply)
        return reply["data"]  # type: ignore[no-any-return]

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == name]

    async def close(self) -> None:
        await self.ws.aclose()
