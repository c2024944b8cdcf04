"""Admin REST on a whole daemon: rooms with statistics, members, connections, disconnects."""

from __future__ import annotations

import orjson
import pytest
from trio_websocket import ConnectionClosed

from pratico_daemon.daemon import Daemon
from tests.conftest import RunningDaemon, make_config
from tests.session.harness import EchoNamespace
from tests.support import http
from tests.support.ws import ws_client


@pytest.fixture
async def echo_daemon(nursery, tmp_path):
    daemon = Daemon(make_config(tmp_path / "state"), products=[EchoNamespace])
    running = RunningDaemon(daemon, await nursery.start(daemon.run))
    yield running
    daemon.request_shutdown()


async def test_admin_sees_rooms_and_disconnects_a_user(echo_daemon):
    d = echo_daemon
    admin = d.token("boss", "admin")
    async with ws_client(f"{d.ws_url}/ws/echo?token={d.token('u1')}") as ws:
        hello = orjson.loads(await ws.get_message())
        await ws.send_message('{"type":"join","ref":1}')
        await ws.get_message()

        assert (await http.get(f"{d.url}/admin/rooms")).status == 401
        assert (await http.get(f"{d.url}/admin/rooms", token=d.token("t", "teacher"))).status == 403
        rooms = (await http.get(f"{d.url}/admin/rooms", token=admin)).json()["items"]
        assert [(r["room_id"], r["members"]) for r in rooms] == [("lobby", 1)]
        room = (await http.get(f"{d.url}/admin/rooms/lobby", token=admin)).json()
        assert room["members"][0]["sid"] == hello["sid"]
        assert room["members"][0]["user_id"] == "u1"
        assert (await http.get(f"{d.url}/admin/rooms/nope", token=admin)).status == 404
        conns = (await http.get(f"{d.url}/admin/connections?user_id=u1", token=admin)).json()
        assert [c["sid"] for c in conns["items"]] == [hello["sid"]]

        reply = await http.request("DELETE", f"{d.url}/admin/users/u1/connections", token=admin)
        assert reply.json() == {"disconnected": 1}
        with pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
        assert info.value.reason.code == 1000
    missing = await http.request("DELETE", f"{d.url}/admin/connections/nope", token=admin)
    assert missing.status == 404
