"""HTTP through the front listener: the ASGI bridge, keep-alive, limits, garbage."""

from __future__ import annotations

import orjson
import trio

from pratico_daemon.auth import Authenticator
from pratico_daemon.http.app import create_app
from pratico_daemon.services import Services
from pratico_daemon.transport import Handlers, Request, Response
from tests.conftest import make_config
from tests.support import http
from tests.transport.helpers import (
    echo_app,
    raw_connect,
    read_responses,
    receive_all,
    start_front,
)


async def test_daemon_app_endpoints_through_the_bridge(nursery, tmp_path):
    config = make_config(tmp_path)
    svc = Services(config=config, auth=Authenticator.from_config(config))
    svc.health.set("listeners", True)
    front = await start_front(nursery, app=create_app(svc))
    url = f"http://{front.address}"
    assert (await http.get(f"{url}/healthz")).json() == {"status": "ok"}
    ready = await http.get(f"{url}/readyz")
    assert ready.status == 200
    assert ready.json()["ready"] is True
    metrics = await http.get(f"{url}/metrics")
    assert metrics.status == 200
    assert b"pratico_connections" in metrics.body
    spec = (await http.get(f"{url}/openapi.json")).json()
    assert {"/healthz", "/readyz", "/metrics", "/openapi.json"} <= set(spec["paths"])
    missing = await http.get(f"{url}/no/such/thing")
    assert missing.status == 404
    assert missing.json()["error"]["code"] == "not_found"


async def test_post_with_a_json_body_and_query_reaches_the_app(nursery):
    front = await start_front(nursery, app=echo_app())
    reply = await http.request("POST", f"http://{front.address}/echo?q=%C3%A9t%C3%A9",
                               json={"a": [1, 2], "t": "Algèbre"})
    assert reply.status == 200
    assert reply.json() == {"body": {"a": [1, 2], "t": "Algèbre"}, "q": "été"}


async def test_keep_alive_serves_two_requests_on_one_connection(nursery):
    front = await start_front(nursery, app=echo_app())
    async with await raw_connect(front.port) as stream:
        request = f"GET /hello HTTP/1.1\r\nHost: {front.address}\r\n\r\n".encode()
        await stream.send_all(request + request)  # pipelined
        replies = await read_responses(stream, 2)
        open_during = front.listener.statistics().tcp_open
    assert [r.status_code for r, _ in replies] == [200, 200]
    assert [orjson.loads(body) for _, body in replies] == [{"hello": "world"}] * 2
    assert open_during == 1  # one TCP connection served both


async def test_garbage_is_answered_400_and_the_listener_survives(nursery):
    front = await start_front(nursery, app=echo_app())
    async with await raw_connect(front.port) as stream:
        await stream.send_all(b"\x16\x03\x01\x02\x00garbage that is not HTTP\r\n\r\n")
        data = await receive_all(stream)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert orjson.loads(body)["error"]["code"] == "invalid_payload"
    assert (await http.get(f"http://{front.address}/hello")).json() == {"hello": "world"}


async def test_oversized_body_is_refused_413_before_it_is_read(nursery):
    front = await start_front(nursery, app=echo_app(), max_snapshot_bytes=1000)
    async with await raw_connect(front.port) as stream:
        await stream.send_all(
            f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {10 * 1024 * 1024}\r\n"
            "Content-Type: application/json\r\n\r\n".encode()
        )
        data = await receive_all(stream)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert orjson.loads(body)["error"]["code"] == "payload_too_large"


async def test_a_silent_client_is_dropped_after_the_handshake_timeout(nursery):
    front = await start_front(nursery, app=echo_app(), handshake_timeout_s=0.3)
    async with await raw_connect(front.port) as stream:
        await stream.send_all(b"GET /hello HTTP/1.1\r\nHost:")  # and then nothing
        with trio.fail_after(5):
            assert await stream.receive_some(1024) == b""  # the server hung up
    stats = front.listener.statistics()
    assert (stats.tcp_open, stats.handshake_timeouts) == (0, 1)


async def test_polling_requests_go_to_the_polling_handler(nursery):
    front = await start_front(nursery, app=echo_app())
    url = f"http://{front.address}/sockets/?EIO=4&transport=polling"
    refused = await http.get(url)
    assert refused.status == 400
    assert refused.json() == {"error": {"code": "invalid_payload",
                                        "message": "only the websocket transport is served"}}

    seen: list[tuple[Request, bytes]] = []

    async def polling(request: Request, body: bytes) -> Response:
        seen.append((request, body))
        return Response(200, b"ok", "text/plain; charset=UTF-8")

    front.listener.handlers = Handlers(polling=polling)
    reply = await http.request("POST", url, raw=b"4hello")
    assert (reply.status, reply.body) == (200, b"ok")
    request, body = seen[0]
    assert (request.method, request.path, body) == ("POST", "/sockets/", b"4hello")
    assert request.query == {"EIO": "4", "transport": "polling"}
    assert request.client[0] == "127.0.0.1"


async def test_bad_handshakes_get_an_http_answer_not_an_upgrade(nursery):
    front = await start_front(nursery, app=echo_app())
    base = (f"GET /ws/pratico HTTP/1.1\r\nHost: {front.address}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\n")
    cases = {
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n": b" 426 ",
        "Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n": b" 400 ",
    }
    for headers, status in cases.items():
        async with await raw_connect(front.port) as stream:
            await stream.send_all((base + headers + "\r\n").encode())
            head, _, body = (await receive_all(stream)).partition(b"\r\n\r\n")
        assert status in head.split(b"\r\n")[0]
        assert orjson.loads(body)["error"]["code"] == "invalid_payload"
    # An upgrade on a path that is not ours is an ordinary request for the app.
    async with await raw_connect(front.port) as stream:
        await stream.send_all(base.replace("/ws/pratico", "/hello").encode() + b"\r\n")
        (reply, body), = await read_responses(stream, 1)
    assert reply.status_code == 200
    assert orjson.loads(body) == {"hello": "world"}
