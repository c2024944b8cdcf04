"""The gateway spoken to by hand over real WebSockets: Engine.IO/Socket.IO and JSON."""

from __future__ import annotations

from contextlib import asynccontextmanager

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.session.harness import start_gateway
from tests.support.ws import ws_client as open_websocket_url


@pytest.fixture
async def server(nursery, tmp_path):
    return await start_gateway(nursery, tmp_path, engineio={"recovery_window_s": 5})


@asynccontextmanager
async def sio_open(server, query: str = ""):
    url = f"{server.ws_base}/sockets/?EIO=4&transport=websocket{query}"
    async with open_websocket_url(url) as ws:
        opening = await ws.get_message()
        assert opening.startswith("0{")
        yield ws, orjson.loads(opening[1:])


async def next_non_ping(ws) -> str:
    while True:
        message = await ws.get_message()
        if message == "2":
            await ws.send_message("3")
            continue
        return message


async def test_socketio_connect_event_ack_and_errors(server):
    async with sio_open(server) as (ws, opening):
        assert opening["pingInterval"] == 25000 and opening["upgrades"] == []
        await ws.send_message('40/echo,{"token":"%s"}' % server.token("u1"))
        connected = await next_non_ping(ws)
        assert connected.startswith("40/echo,")
        body = orjson.loads(connected[len("40/echo,"):])
        assert body["sid"] and body["pid"]
        await ws.send_message('42/echo,7["echo",{"x":1}]')
        assert await next_non_ping(ws) == '43/echo,7[{"status":"SUCCESS","data":{"x":1}}]'
        await ws.send_message('42/echo,8["whoami",{}]')
        assert orjson.loads((await next_non_ping(ws))[len("43/echo,8"):])[0]["data"] == {
            "user": "u1", "role": "teacher"}
        await ws.send_message('42/echo,9["nope",{}]')
        reply = orjson.loads((await next_non_ping(ws))[len("43/echo,9"):])[0]
        assert reply["status"] == "ERROR" and reply["data"]["code"] == "unknown_event"
        await ws.send_message('42/echo,10["fail",{}]')
        reply = orjson.loads((await next_non_ping(ws))[len("43/echo,10"):])[0]
        assert reply["data"] == {"code": "conflict", "message": "as requested", "detail": 1}
        await ws.send_message('42/echo,11["crash",{}]')
        reply = orjson.loads((await next_non_ping(ws))[len("43/echo,11"):])[0]
        assert reply["data"]["code"] == "internal"
        # Binary packets are refused with an ERROR ack when they carry an ack id.
        await ws.send_message('451-/echo,12["echo",{"_placeholder":true,"num":0}]')
        reply = orjson.loads((await next_non_ping(ws))[len("43/echo,12"):])[0]
        assert reply["data"]["code"] == "binary_not_supported"
        # A payload that is not an object is answered, and the connection stays up.
        await ws.send_message('42/echo,13["echo",[1,2]]')
        reply = orjson.loads((await next_non_ping(ws))[len("43/echo,13"):])[0]
        assert reply["data"]["code"] == "invalid_payload"
        await ws.send_message('42/echo,14["echo",{"still":"alive"}]')
        assert "alive" in await next_non_ping(ws)


async def test_socketio_refusals(server):
    async with sio_open(server) as (ws, _):
        await ws.send_message('40/echo,{"token":"garbage"}')
        refused = await next_non_ping(ws)
        assert refused.startswith("44/echo,")
        assert orjson.loads(refused[len("44/echo,"):])["data"]["code"] == "unauthorized"
        await ws.send_message('40/echo,{"refuse":true}')
        refused = orjson.loads((await next_non_ping(ws))[len("44/echo,"):])
        assert refused["data"]["code"] == "forbidden"
        await ws.send_message('40/nowhere,{}')
        refused = orjson.loads((await next_non_ping(ws))[len("44/nowhere,"):])
        assert refused["message"] == "Invalid namespace"
        # Events on a namespace that is not connected are answered, not crashed on.
        await ws.send_message('42/echo,3["echo",{}]')
        reply = orjson.loads((await next_non_ping(ws))[len("43/echo,3"):])[0]
        assert reply["data"]["code"] == "forbidden"


async def test_json_framing_events_replies_and_broadcasts(server):
    url = f"{server.ws_base}/ws/echo?token={server.token('u2', 'student')}"
    async with open_websocket_url(url) as a, open_websocket_url(f"{server.ws_base}/ws/echo") as b:
        hello_a = orjson.loads(await a.get_message())
        hello_b = orjson.loads(await b.get_message())
        assert hello_a["type"] == "connected" and hello_a["recovered"] is False
        await a.send_message('{"type":"echo","ref":"r1","k":"v"}')
        assert orjson.loads(await a.get_message()) == {
            "type": "reply", "ref": "r1", "status": "SUCCESS", "data": {"k": "v"}}
        for ws in (a, b):
            await ws.send_message('{"type":"join","ref":1}')
            assert orjson.loads(await ws.get_message())["status"] == "SUCCESS"
        await b.send_message('{"type":"shout","text":"hi"}')
        for ws in (a, b):
            event = orjson.loads(await ws.get_message())
            assert event["type"] == "shouted" and event["by"] == hello_b["sid"]
            assert event["text"] == "hi" and isinstance(event["offset"], int)
        await a.send_message("not json at all")
        error = orjson.loads(await a.get_message())
        assert error["type"] == "error" and error["data"]["code"] == "invalid_payload"
        await a.send_message('{"type":"whoami","ref":2}')
        assert orjson.loads(await a.get_message())["data"]["user"] == "u2"


async def test_json_refusal_closes_with_4401(server):
    async with open_websocket_url(f"{server.ws_base}/ws/echo?token=bad") as ws:
        refusal = orjson.loads(await ws.get_message())
        assert refusal == {"type": "connect_error", "code": "unauthorized",
                           "message": refusal["message"]}
        with pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
        assert info.value.reason.code == 4401


async def cut_network(ws) -> None:
    """End a client's TCP connection without a closing handshake, as a lost network would."""
    await ws._stream.aclose()


async def test_json_resume_replays_what_was_missed(server):
    url = f"{server.ws_base}/ws/echo?token={server.token('u3')}"
    async with open_websocket_url(f"{server.ws_base}/ws/echo") as shouter:
        await shouter.get_message()
        await shouter.send_message('{"type":"join","ref":1}')
        await shouter.get_message()
        async with open_websocket_url(url) as ws:
            hello = orjson.loads(await ws.get_message())
            await ws.send_message('{"type":"join","ref":1}')
            await ws.get_message()
            await shouter.send_message('{"type":"shout","n":1}')
            seen = orjson.loads(await ws.get_message())
            await shouter.get_message()
            await cut_network(ws)
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
        await trio.sleep(0.1)
        for n in (2, 3):
            await shouter.send_message('{"type":"shout","n":%d}' % n)
            await shouter.get_message()
        resume = f"{url}&resume={hello['resume']}&offset={seen['offset']}"
        async with open_websocket_url(resume) as again:
            back = orjson.loads(await again.get_message())
            assert back["recovered"] is True and back["sid"] == hello["sid"]
            missed = [orjson.loads(await again.get_message()) for _ in range(2)]
            assert [m["n"] for m in missed] == [2, 3]
        log = [kind for kind, sid in server.echo.log if sid == hello["sid"]]
        assert log[:3] == ["connect", "disconnect", "reconnected"]


async def test_rate_limit_answers_rate_limited_and_keeps_the_connection(nursery, tmp_path):
    server = await start_gateway(nursery, tmp_path, limits={"rate_per_s": 1, "rate_burst": 3})
    async with open_websocket_url(f"{server.ws_base}/ws/echo") as ws:
        await ws.get_message()
        for ref in range(5):
            await ws.send_message(orjson.dumps({"type": "echo", "ref": ref}).decode())
        replies = [orjson.loads(await ws.get_message()) for _ in range(5)]
        codes = [r["data"].get("code") for r in replies]
        assert codes[:3] == [None, None, None]
        assert codes[3:] == ["rate_limited", "rate_limited"]
        assert replies[3]["data"]["retry_after"] > 0


async def test_namespaces_on_one_connection_stay_apart(server):
    async with sio_open(server) as (ws, _):
        for ns in ("/echo", "/other"):
            await ws.send_message(f"40{ns},{{}}")
            assert (await next_non_ping(ws)).startswith(f"40{ns},")
        await ws.send_message('42/other,1["echo",{"k":1}]')
        reply = orjson.loads((await next_non_ping(ws))[len("43/other,1"):])[0]
        assert reply["data"] == {"namespace": "/other", "k": 1}
        # /other has no "join" handler: events are routed by namespace, never across.
        await ws.send_message('42/other,2["join",{}]')
        reply = orjson.loads((await next_non_ping(ws))[len("43/other,2"):])[0]
        assert reply["data"]["code"] == "unknown_event"
        await ws.send_message('42/echo,3["join",{}]')
        assert (await next_non_ping(ws)).startswith("43/echo,3")
        await ws.send_message('42/echo,4["shout",{"t":1}]')
        broadcast = await next_non_ping(ws)
        assert broadcast.startswith('42/echo,["shouted",')
        assert (await next_non_ping(ws)).startswith("43/echo,4")
        # Leaving /echo keeps /other connected.
        await ws.send_message("41/echo,")
        await ws.send_message('42/other,5["echo",{}]')
        got = await next_non_ping(ws)
        assert got.startswith("43/other,5"), got
        await ws.send_message('42/echo,6["echo",{}]')
        reply = orjson.loads((await next_non_ping(ws))[len("43/echo,6"):])[0]
        assert reply["data"]["code"] == "forbidden"
