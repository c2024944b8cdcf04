"""WebSockets through the front listener, with trio-websocket as the client."""

from __future__ import annotations

import socket

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed as ClientClosed
from trio_websocket import ConnectionRejected

from pratico_daemon.transport import (
    ConnectionClosed,
    Handlers,
    Request,
    State,
    WebSocket,
    encode_text_frame,
)
from tests.transport.helpers import (
    Echo,
    handshake_bytes,
    raw_connect,
    receive_all,
    start_front,
    tiny_receive_buffer,
    wait_until,
    ws_client,
)


async def test_echo_on_both_paths_with_query_framing_and_namespace(nursery):
    echo = Echo()
    front = await start_front(nursery, handlers=Handlers(websocket=echo))
    url = f"{front.ws_url}/sockets/?EIO=4&transport=websocket&auth=abc"
    async with ws_client(url) as sio:
        await sio.send_message("hello")
        assert await sio.get_message() == "hello"
        await sio.send_message(b"\x00\x01bin")
        assert await sio.get_message() == b"\x00\x01bin"
        async with ws_client(f"{front.ws_url}/ws/conversation?token=t") as js:
            await js.send_message('{"type":"ping"}')
            assert await js.get_message() == '{"type":"ping"}'
            stats = front.listener.statistics()
            assert (stats.socketio_open, stats.json_open) == (1, 1)
            kinds = {(ws.framing, ws.namespace) for ws in echo.open}
            assert kinds == {("socketio", None), ("json", "conversation")}
    assert echo.requests[0].query == {"EIO": "4", "transport": "websocket", "auth": "abc"}
    assert echo.requests[1].path == "/ws/conversation"
    await wait_until(lambda: front.listener.statistics().websockets_open == 0)
    stats = front.listener.statistics()
    assert stats.messages_in == 3
    assert stats.messages_out == 3
    assert stats.bytes_in > 0
    assert stats.bytes_out > 0
    assert [c.code for c in echo.closed] == [1000, 1000]  # the clients closed normally


async def test_a_large_message_in_fragments_is_reassembled(nursery):
    front = await start_front(nursery, handlers=Handlers(websocket=Echo()))
    text = "é" * 30_000  # 60 KB: several TCP reads, under max_message_bytes
    async with ws_client(f"{front.ws_url}/ws/pratico") as ws:
        await ws.send_message(text)
        assert await ws.get_message() == text


async def test_a_2mb_frame_closes_the_connection_with_1009(nursery):
    echo = Echo()
    front = await start_front(nursery, handlers=Handlers(websocket=echo))
    async with ws_client(f"{front.ws_url}/ws/pratico") as ws:
        with pytest.raises(ClientClosed) as closed:  # the close may come during the send
            await _send_then_receive(ws, "x" * (2 * 1024 * 1024))
    assert closed.value.reason.code == 1009
    assert echo.closed[0].code == 1009
    assert front.listener.statistics().oversized_messages == 1
    assert front.metrics.registry.get_sample_value(
        "pratico_errors_total", {"code": "message_too_large"}) == 1.0


async def _send_then_receive(ws, message: str) -> None:
    await ws.send_message(message)
    await ws.get_message()


async def test_invalid_utf8_closes_with_1007(nursery):
    echo = Echo()
    front = await start_front(nursery, handlers=Handlers(websocket=echo))
    async with await raw_connect(front.port) as stream:
        await stream.send_all(handshake_bytes("/ws/pratico", front.port))
        # A masked text frame (mask 0) carrying bytes that are not UTF-8.
        await stream.send_all(bytes((0x81, 0x82, 0, 0, 0, 0, 0xC3, 0x28)))
        data = await receive_all(stream)
    assert data.startswith(b"HTTP/1.1 101 ")
    assert data.split(b"\r\n\r\n", 1)[1][:4] == bytes((0x88, len(data.split(b"\r\n\r\n")[1]) - 2,
                                                       0x03, 0xEF))  # close 1007
    assert echo.closed[0].code == 1007


async def test_handler_returning_closes_1000_and_a_crash_closes_1011(nursery):
    async def greet_and_leave(ws: WebSocket, request: Request) -> None:
        await ws.send_text("bye")

    front = await start_front(nursery, handlers=Handlers(websocket=greet_and_leave))
    async with ws_client(f"{front.ws_url}/ws/pratico") as ws:
        assert await ws.get_message() == "bye"
        with pytest.raises(ClientClosed) as closed:
            await ws.get_message()
    assert closed.value.reason.code == 1000

    front.listener.handlers = Handlers(websocket=Echo())
    async with ws_client(f"{front.ws_url}/ws/pratico") as ws:
        await ws.send_message("crash")
        with pytest.raises(ClientClosed) as closed:
            await ws.get_message()
    assert closed.value.reason.code == 1011
    async with ws_client(f"{front.ws_url}/ws/pratico") as ws:  # still serving
        await ws.send_message("still here")
        assert await ws.get_message() == "still here"


async def test_default_websocket_handler_closes_with_1013(nursery):
    front = await start_front(nursery)
    async with ws_client(f"{front.ws_url}/sockets/?EIO=4&transport=websocket") as ws:
        with pytest.raises(ClientClosed) as closed:
            await ws.get_message()
    assert closed.value.reason.code == 1013


async def test_one_encoded_frame_goes_to_many_connections(nursery):
    echo = Echo()
    front = await start_front(nursery, handlers=Handlers(websocket=echo))
    clients = []
    async with trio.open_nursery() as inner:
        for _ in range(20):
            clients.append(await inner.start(_client, f"{front.ws_url}/ws/pratico"))
        await wait_until(lambda: len(echo.open) == 20)
        frame = encode_text_frame(orjson.dumps({"type": "chat", "text": "salut"}).decode())
        for _ in range(100):
            assert all(ws.send_frame_nowait(frame) for ws in echo.open)
            await trio.lowlevel.checkpoint()
        for client in clients:
            messages = [await client.get_message() for _ in range(100)]
            assert set(messages) == {'{"type":"chat","text":"salut"}'}
        inner.cancel_scope.cancel()


async def _client(url: str, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    async with ws_client(url, message_queue_size=200) as ws:
        task_status.started(ws)
        await trio.sleep_forever()


async def test_slow_consumer_is_closed_while_a_healthy_client_keeps_receiving(nursery):
    echo = Echo()
    front = await start_front(nursery, handlers=Handlers(websocket=echo),
                              outbox_messages=200, outbox_bytes=256 * 1024)
    frame = encode_text_frame("m" * 1000)
    received = 0

    async def healthy(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
        nonlocal received
        async with ws_client(f"{front.ws_url}/ws/pratico") as ws:
            task_status.started()
            while True:
                assert await ws.get_message() == "m" * 1000
                received += 1

    async with trio.open_nursery() as inner:
        await inner.start(healthy)
        slow = await raw_connect(front.port)
        tiny_receive_buffer(slow.socket)
        await slow.send_all(handshake_bytes("/ws/pratico", front.port))
        await wait_until(lambda: len(echo.open) == 2)
        slow_ws = echo.open[1]
        sent_to_healthy = 0
        with trio.fail_after(30):
            while slow_ws.state is State.OPEN:
                for _ in range(10):
                    for ws in list(echo.open):
                        if ws.send_frame_nowait(frame) and ws is not slow_ws:
                            sent_to_healthy += 1
                await trio.sleep(0.001)  # the healthy client reads as it goes
        await wait_until(lambda: received == sent_to_healthy, limit_s=10)
        await slow.aclose()
        inner.cancel_scope.cancel()
    assert received == sent_to_healthy > 200
    assert 4008 in [c.code for c in echo.closed]
    assert front.listener.statistics().slow_consumer_disconnects == 1
    metric = front.metrics.registry.get_sample_value("pratico_slow_consumer_disconnects_total")
    assert metric == 1.0


async def test_a_client_that_reads_late_gets_everything_and_the_writer_task_ends(nursery):
    """Frames that do not fit in the socket wait in the outbox for a writer task,
    which exists only while there is something to write (an idle connection has none)."""
    echo = Echo()
    front = await start_front(nursery, handlers=Handlers(websocket=echo),
                              outbox_messages=5000, outbox_bytes=8 * 1024 * 1024)
    client = await raw_connect(front.port)
    await client.send_all(handshake_bytes("/ws/pratico", front.port))
    await wait_until(lambda: len(echo.open) == 1)
    ws = echo.open[0]
    ws._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # fills up sooner
    tasks = lambda: len(front.listener._nursery.child_tasks)  # noqa: E731
    idle_tasks = tasks()
    frame = encode_text_frame("m" * 1000)
    count = 0
    while ws.outbox_size()[0] < 100:  # until the socket buffers are full, and then some
        assert ws.send_frame_nowait(frame)
        count += 1
        assert count < 5000
    assert tasks() == idle_tasks + 1  # the writer
    data = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < count * 1004:
            data += await client.receive_some(65536)
    assert data.split(b"\r\n\r\n", 1)[1] == (b"\x81\x7e\x03\xe8" + b"m" * 1000) * count
    await wait_until(lambda: tasks() == idle_tasks)
    assert ws.outbox_size() == (0, 0)
    assert ws.send_frame_nowait(frame)  # straight to the socket again
    await client.aclose()


async def test_per_ip_limit_answers_503_with_a_json_body(nursery):
    front = await start_front(nursery, handlers=Handlers(websocket=Echo()),
                              max_connections_per_ip=2)
    url = f"{front.ws_url}/ws/pratico"
    async with ws_client(url), ws_client(url):
        with pytest.raises(ConnectionRejected) as refused:
            async with ws_client(url):
                pass
        assert refused.value.status_code == 503
        body = orjson.loads(refused.value.body)
        assert body["error"]["code"] == "unavailable"
        assert "this address" in body["error"]["message"]
    assert front.listener.statistics().refused_handshakes == 1
    async with ws_client(url) as ws:  # the slots came back
        await ws.send_message("ok")
        assert await ws.get_message() == "ok"


async def test_total_connection_limit_answers_503(nursery):
    front = await start_front(nursery, handlers=Handlers(websocket=Echo()), max_connections=1)
    url = f"{front.ws_url}/sockets/"
    async with ws_client(url):
        with pytest.raises(ConnectionRejected) as refused:
            async with ws_client(url):
                pass
    assert refused.value.status_code == 503
    assert orjson.loads(refused.value.body)["error"]["message"] == "too many connections"


async def test_drain_closes_every_websocket_with_1001_after_the_session_goodbye(nursery):
    echo = Echo()
    said_goodbye: list[int] = []

    async def goodbye() -> None:
        for ws in echo.open:
            await ws.send_text("goodbye")
        said_goodbye.append(len(echo.open))

    front = await start_front(nursery, handlers=Handlers(websocket=echo, drain=goodbye))
    closes: list[tuple[list[str], int, str]] = []

    async def client(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with ws_client(f"{front.ws_url}/ws/pratico") as ws:
            task_status.started()
            got = []
            try:
                while True:
                    got.append(await ws.get_message())
            except ClientClosed as closed:
                closes.append((got, closed.reason.code, closed.reason.reason))

    async with trio.open_nursery() as inner:
        for _ in range(3):
            await inner.start(client)
        await wait_until(lambda: len(echo.open) == 3)
        with trio.fail_after(10):
            await front.listener.drain()
    assert said_goodbye == [3]
    assert closes == [(["goodbye"], 1001, "server shutting down, reconnect")] * 3
    assert [c.code for c in echo.closed] == [1001] * 3
    with pytest.raises(OSError, match="all attempts to connect"):  # no longer accepting
        await raw_connect(front.port)


async def test_receive_after_close_raises_connection_closed(nursery):
    results: list[object] = []

    async def close_then_receive(ws: WebSocket, request: Request) -> None:
        ws.close(4000, "done")
        try:
            await ws.receive()
        except ConnectionClosed as closed:
            results.append((closed.code, closed.reason, repr(ws)))
        with pytest.raises(ConnectionClosed):
            await ws.send_text("too late")

    front = await start_front(nursery, handlers=Handlers(websocket=close_then_receive))
    async with ws_client(f"{front.ws_url}/ws/pratico") as ws:
        with pytest.raises(ClientClosed) as closed:
            await ws.get_message()
    assert closed.value.reason.code == 4000
    code, reason, shown = results[0]
    assert (code, reason) == (4000, "done")
    assert "json /ws/pratico" in shown
    assert "CLOSING" in shown


async def test_json_clients_that_do_not_answer_pings_are_closed(nursery):
    echo = Echo()
    front = await start_front(nursery, handlers=Handlers(websocket=echo),
                              keepalive_s=0.2, close_timeout_s=0.3)
    # The raw client completes the handshake and then never reads (so never pongs).
    async with (ws_client(f"{front.ws_url}/ws/pratico") as answering,
                await raw_connect(front.port) as silent):
        await silent.send_all(handshake_bytes("/ws/pratico", front.port))
        await wait_until(lambda: len(echo.open) == 2)
        await wait_until(lambda: [c.code for c in echo.closed] == [1011])
        await trio.sleep(0.5)  # two more rounds: the answering client stays
        await answering.send_message("still here")
        assert await answering.get_message() == "still here"
    assert echo.closed[0].reason == "keepalive ping timeout"


async def test_json_clients_connected_together_are_pinged_at_different_times(nursery):
    # Pinging hundreds of clients in one tick delayed every client's messages
    # (bench/signalling_bench.py): each gets its own phase in 1/2..1 interval.
    echo = Echo()
    front = await start_front(nursery, handlers=Handlers(websocket=echo), keepalive_s=10.0)
    opened = trio.current_time()
    async with trio.open_nursery() as clients:
        done = trio.Event()

        async def hold_one() -> None:
            async with ws_client(f"{front.ws_url}/ws/pratico"):
                await done.wait()

        for _ in range(20):
            clients.start_soon(hold_one)
        await wait_until(lambda: len(echo.open) == 20)
        dues = sorted(ws.keepalive_due - opened for ws in echo.open)
        done.set()
    assert all(5.0 <= due <= 10.0 + 1.0 for due in dues), dues
    # The loop wakes every interval/8: the pings of 20 clients span several wake-ups.
    assert len({int(due / (10.0 / 8)) for due in dues}) >= 3, dues
