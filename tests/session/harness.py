"""A gateway on a real port with an "/echo" namespace, for the gateway's own tests."""

from __future__ import annotations

from typing import Any

import attrs
import trio

from pratico_daemon.auth import Authenticator
from pratico_daemon.errors import AppError
from pratico_daemon.rooms.registry import RoomRegistry
from pratico_daemon.rooms.room import Room
from pratico_daemon.services import Services
from pratico_daemon.session.gateway import Gateway
from pratico_daemon.session.namespace import Client, Namespace
from pratico_daemon.transport import FrontListener
from tests.conftest import make_config


class EchoNamespace(Namespace):
    """Echoes, joins one room, broadcasts to it, and records its hooks."""

    name = "/echo"

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self.log: list[tuple[str, str]] = []
        self.on("echo")(self._echo)
        self.on("join")(self._join)
        self.on("shout")(self._shout)
        self.on("fail")(self._fail)
        self.on("crash")(self._crash)
        self.on("whoami")(self._whoami)
        self.on("kick_me")(self._kick_me)

    async def connect(self, client: Client, auth: dict[str, Any]) -> dict[str, Any] | None:
        if auth.get("refuse") or client.query.get("refuse"):
            raise AppError("forbidden", "refused on request")
        self.log.append(("connect", client.sid))
        return None

    async def disconnect(self, client: Client, reason: str) -> None:
        self.log.append(("disconnect", client.sid))

    async def reconnected(self, client: Client) -> None:
        self.log.append(("reconnected", client.sid))

    async def gone(self, client: Client) -> None:
        self.log.append(("gone", client.sid))
        room = self.services.rooms.get("lobby")
        if room is not None:
            await room.call(lambda r: r.leave(client.member_id))

    async def _room(self) -> Room:
        return await self.services.rooms.open("lobby", lambda: Room("lobby", "echo", self.name))

    async def _echo(self, client: Client, payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    async def _join(self, client: Client, payload: dict[str, Any]) -> dict[str, Any]:
        room = await self._room()
        return {"members": await room.call(lambda r: (r.join(client), len(r.members))[1])}

    async def _shout(self, client: Client, payload: dict[str, Any]) -> None:
        room = await self._room()
        await room.call(lambda r: r.broadcast("shouted", {"by": client.sid, **payload}))

    async def _fail(self, client: Client, payload: dict[str, Any]) -> None:
        raise AppError("conflict", "as requested", detail=1)

    async def _crash(self, client: Client, payload: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    async def _whoami(self, client: Client, payload: dict[str, Any]) -> dict[str, Any]:
        return {"user": client.identity.user_id, "role": client.identity.role}

    async def _kick_me(self, client: Client, payload: dict[str, Any]) -> None:
        client.disconnect_soon("kicked")


class OtherNamespace(Namespace):
    """A second namespace, to show that namespaces on one connection stay apart."""

    name = "/other"

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self.on("echo")(self._echo)

    async def _echo(self, client: Client, payload: dict[str, Any]) -> dict[str, Any]:
        return {"namespace": self.name, **payload}


@attrs.define
class GatewayServer:
    services: Services
    gateway: Gateway
    front: FrontListener
    address: str
    echo: EchoNamespace

    @property
    def ws_base(self) -> str:
        return f"ws://{self.address}"

    @property
    def http_base(self) -> str:
        return f"http://{self.address}"

    def token(self, sub: str, role: str = "teacher", org: str = "org1") -> str:
        return self.services.auth.mint(sub, role, org)


async def start_gateway(nursery: trio.Nursery, tmp_path: Any, **sections: Any) -> GatewayServer:
    config = make_config(tmp_path / "state", **sections)
    services = Services(config=config, auth=Authenticator.from_config(config))
    services.rooms = await nursery.start(RoomRegistry(services.metrics).run)
    echo = EchoNamespace(services)
    gateway = Gateway(services, [echo, OtherNamespace(services)])
    await nursery.start(gateway.run)
    front = FrontListener(config.limits, services.metrics, app=None, handlers=gateway.handlers())
    address = await nursery.start(front.serve, "127.0.0.1", 0)
    return GatewayServer(services, gateway, front, address, echo)
