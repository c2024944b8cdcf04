"""Hostile input over raw WebSockets gets its documented answer; a healthy client never notices.

Issue 4: garbage text, invalid JSON, an unknown event with an ack, a 2 MB frame,
a binary packet, a flood beyond the rate limit, a client that never reads —
while a healthy client in parallel keeps its acks and broadcasts.
"""

from __future__ import annotations

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.session.harness import start_gateway
from tests.support.ws import ws_client as open_websocket
from tests.transport.helpers import tiny_receive_buffer, wait_until


@pytest.fixture
async def server(nursery, tmp_path):
    return await start_gateway(
        nursery, tmp_path,
        limits={"rate_per_s": 5, "rate_burst": 10, "outbox_messages": 50,
                "outbox_bytes": 64 * 1024},
    )


async def healthy_client(server, rounds: int, done: trio.Event, failures: list[str]) -> None:
    """Echo with acks and receive broadcasts throughout; record anything unexpected."""
    async with open_websocket(f"{server.ws_base}/ws/echo") as ws:
        await ws.get_message()
        await ws.send_message('{"type":"join","ref":0}')
        await ws.get_message()
        for n in range(rounds):
            await ws.send_message(orjson.dumps({"type": "echo", "ref": n, "n": n}).decode())
            while True:
                message = orjson.loads(await ws.get_message())
                if message.get("type") == "reply":
                    break  # broadcasts from the flooders may arrive in between
            if message != {"type": "reply", "ref": n, "status": "SUCCESS", "data": {"n": n}}:
                failures.append(repr(message))
            await trio.sleep(0.25)  # under the 5/s rate limit the hostile clients hit
    done.set()


async def sio_connected(ws) -> None:
    assert (await ws.get_message()).startswith("0{")
    await ws.send_message("40/echo,{}")
    assert (await ws.get_message()).startswith("40/echo,")


async def test_hostile_clients_get_answers_and_a_healthy_one_is_unaffected(server, nursery):
    done = trio.Event()
    failures: list[str] = []
    nursery.start_soon(healthy_client, server, 16, done, failures)

    sio_url = f"{server.ws_base}/sockets/?EIO=4&transport=websocket"
    # Garbage that is not even an Engine.IO packet: the session is closed with 1007.
    async with open_websocket(sio_url) as ws:
        await sio_connected(ws)
        await ws.send_message("garbage")
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await ws.get_message()
        assert info.value.reason.code == 1007

    async with open_websocket(sio_url) as ws:
        await sio_connected(ws)
        # Invalid JSON in an event with an ack id: an ERROR ack, the connection stays.
        await ws.send_message('42/echo,5["echo",{bad json')
        reply = orjson.loads((await ws.get_message())[len("43/echo,5"):])[0]
        assert reply["data"]["code"] == "invalid_payload"
        # An unknown event with an ack.
        await ws.send_message('42/echo,6["no_such_event",{}]')
        reply = orjson.loads((await ws.get_message())[len("43/echo,6"):])[0]
        assert reply["data"]["code"] == "unknown_event"
        # A binary packet with an ack id.
        await ws.send_message('451-/echo,7["echo",{"_placeholder":true,"num":0}]')
        reply = orjson.loads((await ws.get_message())[len("43/echo,7"):])[0]
        assert reply["data"]["code"] == "binary_not_supported"
        # A raw binary frame (an attachment nobody announced): dropped, still connected.
        await ws.send_message(b"\x00\x01binary")
        await ws.send_message('42/echo,8["echo",{"ok":1}]')
        assert (await ws.get_message()) == '43/echo,8[{"status":"SUCCESS","data":{"ok":1}}]'

    # A flood beyond the rate limit: rate_limited acks with retry_after, no disconnect.
    async with open_websocket(f"{server.ws_base}/ws/echo") as ws:
        await ws.get_message()
        for ref in range(30):
            await ws.send_message(orjson.dumps({"type": "echo", "ref": ref}).decode())
        replies = [orjson.loads(await ws.get_message()) for _ in range(30)]
        limited = [r for r in replies if r["status"] == "ERROR"]
        assert limited
        assert all(r["data"]["code"] == "rate_limited" for r in limited)
        assert all(r["data"]["retry_after"] > 0 for r in limited)

    # A 2 MB frame: closed with 1009 (over limits.max_message_bytes).
    async with open_websocket(f"{server.ws_base}/ws/echo", max_message_size=4 * 2**20) as ws:
        await ws.get_message()
        # The server may close while the frame is still being sent (it reads the header).
        with pytest.raises(ConnectionClosed) as info:
            await ws.send_message('{"type":"echo","pad":"' + "x" * (2 * 2**20) + '"}')
            await ws.get_message()
        assert info.value.reason.code == 1009

    # A client that joins the room and never reads: cut off as a slow consumer (4008).
    host, port = server.address.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    tiny_receive_buffer(stream.socket)
    await stream.send_all(
        b"GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    await stream.send_all(_masked_text(b'{"type":"join","ref":1}'))
    await wait_until(lambda: server.services.rooms.get("lobby") is not None
                     and len(server.services.rooms.get("lobby").members) >= 2)
    room = server.services.rooms.get("lobby")
    slow_before = server.front.statistics().slow_consumer_disconnects
    big = "y" * 4000
    for n in range(2000):  # ~8 MB: more than any socket buffer plus the outbox bound
        await room.call(lambda r, n=n: r.broadcast("shouted", {"n": n, "pad": big}))
        if server.front.statistics().slow_consumer_disconnects > slow_before:
            break
        await trio.lowlevel.checkpoint()
    await wait_until(lambda: server.front.statistics().slow_consumer_disconnects > slow_before)
    await stream.aclose()

    with trio.fail_after(30):
        await done.wait()
    assert failures == []


def _masked_text(payload: bytes) -> bytes:
    """One client text frame (clients must mask), for the raw-socket client."""
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


async def test_ping_timeout_closes_a_silent_socketio_session(nursery, tmp_path):
    server = await start_gateway(nursery, tmp_path,
                                 engineio={"ping_interval_s": 0.2, "ping_timeout_s": 0.2})
    async with open_websocket(f"{server.ws_base}/sockets/?EIO=4&transport=websocket") as ws:
        await sio_connected(ws)
        # Never answer the server's "2" pings: the session ends within interval + timeout.
        with trio.fail_after(5), pytest.raises(ConnectionClosed):
            while True:
                await ws.get_message()
    await wait_until(lambda: not server.gateway.engines)
    assert ("disconnect", next(sid for kind, sid in server.echo.log if kind == "connect")) in \
        server.echo.log
