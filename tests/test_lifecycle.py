"""The daemon's lifecycle as an operator sees it, on a real subprocess:
SIGTERM drains and exits 0 in time, a second signal exits at once, SIGHUP
reopens the log file that logrotate moved away.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed

from pratico_daemon.auth import Authenticator
from pratico_daemon.config import load
from tests.support import http
from tests.support.process import daemon_process, write_config
from tests.transport.helpers import ws_client

SHUTDOWN_TIMEOUT_S = 5.0


def _messages(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [orjson.loads(line)["msg"] for line in path.read_text().splitlines() if line]


async def _silent_websocket(address: str, resource: str) -> trio.SocketStream:
    """A WebSocket client that completes the handshake and then never answers:
    the drain waits for its closing handshake, so the daemon stays draining."""
    host, _, port = address.rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(
        f"GET {resource} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += await stream.receive_some(4096)
    assert response.startswith(b"HTTP/1.1 101"), response
    return stream


async def test_second_signal_during_drain_exits_at_once(tmp_path: Path):
    config = write_config(tmp_path / "config.toml", tmp_path / "state",
                          daemon={"shutdown_timeout_s": 60.0})
    async with daemon_process(config) as proc:
        token = Authenticator.from_config(load(config, environ={})).mint("u1", "teacher", "o1")
        stream = await _silent_websocket(proc.address, f"/ws/conversation?token={token}")
        proc.signal(signal.SIGTERM)
        await proc.wait_until(lambda: any(r["msg"] == "closing 1 websockets with 1001"
                                          for r in proc.log_records()))
        await trio.sleep(0.2)
        assert proc.process.poll() is None  # still draining: the client never answered
        started = trio.current_time()
        proc.signal(signal.SIGINT)
        # Exit status 1: the drain did not complete (systemd records a failure).
        assert await proc.wait_exit(timeout_s=10) == 1
        assert trio.current_time() - started < 2
        messages = [r["msg"] for r in proc.log_records()]
        assert "second SIGINT: exiting now" in messages
        await stream.aclose()


async def _wait_logged(path: Path, match: Callable[[str], bool]) -> None:
    """Poll a log file (a file has no change notification worth the trouble)."""
    with trio.fail_after(10):
        while True:
            if any(match(m) for m in _messages(path)):
                return
            await trio.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_drains_and_exits_0_within_the_timeout(tmp_path: Path, signum):
    config = write_config(tmp_path / "config.toml", tmp_path / "state",
                          daemon={"shutdown_timeout_s": SHUTDOWN_TIMEOUT_S})
    async with daemon_process(config) as proc:
        scrape = await http.get(f"{proc.url}/metrics")
        assert scrape.status == 200
        assert b"pratico_draining 0.0" in scrape.body

        started = trio.current_time()
        proc.signal(signum)
        assert await proc.wait_exit(timeout_s=SHUTDOWN_TIMEOUT_S + 5) == 0
        assert trio.current_time() - started < SHUTDOWN_TIMEOUT_S
        messages = [r["msg"] for r in proc.log_records()]
        assert f"{signum.name}: draining" in messages
        assert not any("timed out" in m for m in messages)


async def test_sighup_reopens_the_log_file(tmp_path: Path):
    log_file = tmp_path / "daemon.log"
    config = write_config(tmp_path / "config.toml", tmp_path / "state",
                          log={"file": str(log_file), "format": "json"})
    async with daemon_process(config) as proc:
        # READY=1 may arrive just before the log line.
        await _wait_logged(log_file, lambda m: " ready on " in m)
        rotated = log_file.rename(tmp_path / "daemon.log.1")  # what logrotate does

        proc.signal(signal.SIGHUP)
        await _wait_logged(log_file, lambda m: m == "SIGHUP: log files reopened")
        assert (await http.get(f"{proc.url}/healthz")).status == 200  # still serving

        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit(timeout_s=10) == 0
        after = _messages(log_file)
        assert "SIGTERM: draining" in after
        before = _messages(rotated)
        assert "SIGTERM: draining" not in before
        assert "SIGHUP: log files reopened" not in before


async def _read_until_closed(ws) -> int:
    """Read (and drop) messages until the server closes; the close code."""
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed as closed:
        return closed.reason.code


async def test_sigterm_tells_every_websocket_client_to_reconnect(tmp_path: Path):
    config = write_config(tmp_path / "config.toml", tmp_path / "state",
                          daemon={"shutdown_timeout_s": SHUTDOWN_TIMEOUT_S})
    async with daemon_process(config) as proc, trio.open_nursery() as nursery:
        token = Authenticator.from_config(load(config, environ={})).mint("u1", "teacher", "org1")
        codes: dict[str, int] = {}
        ready: set[str] = set()

        async def client(name: str, url: str, first: str | None) -> None:
            async with ws_client(url) as ws:
                if first is not None:
                    opened = await ws.get_message()  # Engine.IO open packet
                    assert opened.startswith("0{")
                    await ws.send_message(first)
                    assert (await ws.get_message()).startswith("40/classroom,{")  # connected
                else:
                    assert '"connected"' in await ws.get_message()  # the JSON hello
                ready.add(name)
                codes[name] = await _read_until_closed(ws)

        for i in range(3):
            nursery.start_soon(client, f"json{i}", f"{proc.ws_url}/ws/conversation?token={token}",
                               None)
            nursery.start_soon(client, f"sio{i}",
                               f"{proc.ws_url}/sockets/?EIO=4&transport=websocket&role=teacher&org_id=org1",
                               '40/classroom,{"token":"%s"}' % token)
        # Every client is connected (the daemon counts them) before SIGTERM.
        with trio.fail_after(10):
            while True:
                body = (await http.get(f"{proc.url}/metrics")).body.decode()
                if ('pratico_connections{framing="json"} 3.0' in body
                        and 'pratico_connections{framing="socketio"} 3.0' in body
                        and len(ready) == 6):  # and every namespace handshake answered
                    break
                await trio.sleep(0.05)
        started = trio.current_time()
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit(timeout_s=SHUTDOWN_TIMEOUT_S + 5) == 0
        assert trio.current_time() - started < SHUTDOWN_TIMEOUT_S
    assert codes == {**{f"json{i}": 1001 for i in range(3)}, **{f"sio{i}": 1001 for i in range(3)}}
