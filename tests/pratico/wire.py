"""Pratico on a real port: gateway + front listener + REST app + real stores, and a JSON peer.

`start_server` is what the daemon will assemble, built from the same parts, so
the end-to-end tests run before (and independently of) the daemon's wiring.
`JsonPeer` is a plain-JSON WebSocket client (trio-websocket) that records the
server events it receives and matches replies to refs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import trio

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
from tests.support.json_peer import JsonPeer as BasePeer
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


class JsonPeer(BasePeer):
    namespace = "pratico"
