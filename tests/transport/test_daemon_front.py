"""The front listener inside the whole daemon: one URL by default, an ops port on demand."""

from __future__ import annotations

import pytest
from trio_websocket import ConnectionClosed as ClientClosed

from pratico_daemon.transport import FrontListener, Handlers
from tests.conftest import make_config, start_daemon
from tests.support import http
from tests.transport.helpers import Echo, wait_until, ws_client


async def test_one_port_serves_rest_and_websockets_and_drain_says_1001(nursery, tmp_path):
    running = await start_daemon(nursery, make_config(tmp_path))
    assert running.addresses.realtime == running.addresses.http
    gateway = running.daemon.services.gateway  # the session layer, which owns the front
    front = getattr(gateway, "front", gateway)
    assert isinstance(front, FrontListener)
    echo = Echo()
    front.handlers = Handlers(websocket=echo)
    async with ws_client(f"{running.ws_url}/ws/conversation") as ws:
        await ws.send_message("hi")
        assert await ws.get_message() == "hi"
        metrics = await http.get(f"{running.url}/metrics")
        assert 'pratico_connections{framing="json"} 1.0' in metrics.body.decode()
        running.daemon.request_shutdown()
        with pytest.raises(ClientClosed) as closed:
            await ws.get_message()
    assert closed.value.reason.code == 1001
    assert closed.value.reason.reason == "server shutting down, reconnect"
    await wait_until(lambda: front.statistics().websockets_open == 0)


async def test_an_http_port_adds_hypercorn_for_the_app_only(nursery, tmp_path):
    config = make_config(tmp_path, http={"port": 0})
    running = await start_daemon(nursery, config)
    assert running.addresses.realtime != running.addresses.http
    for base in (f"http://{running.addresses.realtime}", running.url):
        assert (await http.get(f"{base}/healthz")).json() == {"status": "ok"}
