"""Interop with the real npm socket.io-client: websocket-only, polling+upgrade, recovery."""

from __future__ import annotations

import socket

import pytest
import trio

from tests.session.harness import start_gateway
from tests.support.node import start_node, start_python_client
from tests.transport.helpers import wait_until as wait_for


@pytest.fixture
async def server(nursery, tmp_path):
    return await start_gateway(nursery, tmp_path, engineio={"recovery_window_s": 10})


@pytest.mark.parametrize("transports", ["websocket", "default"])
async def test_basic_flow_with_the_real_client(server, nursery, transports):
    client = await start_node(nursery, "gateway_echo.js", server.http_base,
                              server.token("teacher-1"), transports, "basic")
    connected = await client.next()
    assert connected.get("connected") is True, connected
    assert connected["recovered"] is False
    assert connected["transport"] == ("websocket" if transports == "websocket" else "polling")
    echo = await client.next()
    assert echo["echo"] == {"status": "SUCCESS", "data": {"n": 1, "text": "héllo"}}
    who = await client.next()
    assert who["who"]["data"] == {"user": "teacher-1", "role": "teacher"}
    unknown = await client.next()
    assert unknown["unknown"]["data"]["code"] == "unknown_event"
    join = await client.next()
    assert join["join"]["data"]["members"] == 1
    shouted = await client.next()
    assert shouted["shouted"]["text"] == "to all"
    assert (await client.next())["final_transport"] == "websocket"
    assert (await client.next())["done"] is True
    assert await client.wait() == 0
    await wait_for(lambda: any(kind == "gone" for kind, _ in server.echo.log))


async def test_refused_connect_reaches_connect_error(server, nursery):
    client = await start_node(nursery, "gateway_echo.js", server.http_base, "not-a-jwt",
                              "websocket", "refused")
    refused = await client.next()
    assert refused["data"]["code"] == "unauthorized"
    assert await client.wait() == 0


async def test_connection_state_recovery_with_the_real_client(server, nursery):
    client = await start_node(nursery, "gateway_echo.js", server.http_base,
                              server.token("teacher-2"), "websocket", "recover")
    ready = await client.next()
    sid = ready["ready"]
    # Cut the client's connection from the server side, as a network drop would.
    engine = next(e for e in server.gateway.engines.values() if sid in
                  {c.sid for c in e.clients.values()})
    assert engine.ws is not None
    engine.ws._sock.shutdown(socket.SHUT_RDWR)
    # While it is away, the room keeps talking.
    room = server.services.rooms.get("lobby")
    await trio.sleep(0.05)
    for n in (1, 2):
        await room.call(lambda r, n=n: r.broadcast("shouted", {"n": n}))
    result = await client.next()
    assert result == {"reconnected": True, "recovered": True, "sameId": True, "seen": [1, 2]}
    assert await client.wait() == 0


@pytest.mark.parametrize("transports", ["websocket", "default"])
async def test_python_socketio_async_client(server, nursery, transports):
    client = await start_python_client(nursery, "gateway_echo.py", server.http_base,
                                       server.token("teacher-3"), transports)
    connected = await client.next()
    assert connected.get("connected") is True, connected
    assert (await client.next())["echo"] == {"status": "SUCCESS", "data": {"n": 2}}
    assert (await client.next())["who"]["data"]["user"] == "teacher-3"
    assert (await client.next())["fail"]["data"]["code"] == "conflict"
    assert (await client.next())["join"]["status"] == "SUCCESS"
    assert (await client.next())["shouted"]["text"] == "from python"
    assert (await client.next())["done"] is True
    assert await client.wait() == 0
