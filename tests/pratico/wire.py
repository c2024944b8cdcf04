"""Pratico on a real port: gateway + front listener + REST app + real stores, and a JSON peer.

`start_server` is what the daemon will assemble, built from the same parts, so
the end-to-end tests run before (and independently of) the daemon's wiring.
`JsonPeer` is a plain-JSON WebSocket client (trio-websocket) that records the
server events it receives and matches replies to refs.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from pratico_daemon.auth import Authenticator
from pratico_daemon.http.app import create_app
from pratico_daemon.metrics import Metrics
from pratico_daemon.pratico import create_namespace
from pratico_daemon.pratico.live import PraticoNamespace
from pratico_daemon.rooms.registry import RoomRegistry
from pratico_daemon.services import Services
from pratico_daemon.session.gateway import Gateway
from pratico_daemon.storage.checkpointer import Checkpointer
from pratico_daemon.storage.embedded_checkpoints import open_embedded_checkpoints
from pratico_daemon.transport import FrontListener
from tests.conftest import make_config
from tests.pratico.conftest import RigStores
from tests.support.pg import open_backend


@attrs.define
class Server:
    services: Services
    ns: PraticoNamespace
    gateway: Gateway
    checkpointer: Checkpointer
    address: str

    @property
    def http(self) -> str:
        return f"http://{self.address}"

    @property
    def ws(self) -> str:
        return f"ws://{self.address}"

    def token(self, sub: str, role: str = "teacher", org: str = "org1") -> str:
        return self.services.auth.mint(sub, role, org)


async def _serve(tmp_path: Path, sections: dict[str, Any], *,
                 task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    config = make_config(tmp_path / "state", **sections)
    services = Services(config=config, auth=Authenticator.from_config(config))
    async with open_backend("embedded", tmp_path, services=services) as backend, \
            open_embedded_checkpoints(config, services) as cps, \
            trio.open_nursery() as nursery:
        checkpointer = Checkpointer(cps.checkpoints, services.metrics,
                                    interval_s=config.redis.checkpoint_interval_s)
        services.stores = RigStores(events=backend.events, checkpoints=cps.checkpoints,
                                    presence=None, repos=backend.repos,
                                    checkpointer=checkpointer)
        await nursery.start(checkpointer.run)
        services.rooms = await nursery.start(RoomRegistry(Metrics()).run)
        ns = create_namespace(services)
        await nursery.start(ns.run)
        gateway = Gateway(services, [ns])
        services.gateway = gateway
        await nursery.start(gateway.run)
        front = FrontListener(config.limits, services.metrics, app=create_app(services),
                              handlers=gateway.handlers())
        address = await nursery.start(front.serve, "127.0.0.1", 0)
        task_status.started(Server(services, ns, gateway, checkpointer, address))


async def start_server(nursery: trio.Nursery, tmp_path: Path, **sections: Any) -> Server:
    return await nursery.start(_serve, tmp_path, sections)  # type: ignore[no-any-return]


class JsonPeer:
    """One `/ws/pratico` connection: `call()` waits for the reply; events are recorded."""

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
        resource = "/ws/pratico" + (f"?token={token}" if token else "")
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
