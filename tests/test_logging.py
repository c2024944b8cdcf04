"""Logs: JSON lines off a TTY (journald), readable text on one, context fields,
and never a credential, wherever it hides."""

from __future__ import annotations

import logging
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed

from pratico_daemon import logs
from pratico_daemon.auth import Authenticator
from pratico_daemon.config import load
from tests.support import http
from tests.support.process import daemon_process, write_config
from tests.transport.helpers import ws_client

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJlLXNlY3JldA"

@pytest.fixture
def restore_logging():
    """`logs.setup` configures the process; put the test runner's logging back."""
    logger = logging.getLogger("pratico")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.handlers[:], logger.level, logger.propagate = saved


_EMIT = """
import sys
from pratico_daemon import logs
logs.setup("info", sys.argv[1])
log = logs.get("rooms")
log.info("member joined %s", "r1", extra={"conn": "c1", "room": "r1", "user": "u1"})
log.info("no context here")
"""


def _emit(fmt: str, stderr: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _EMIT, fmt], stderr=stderr,
                            stdout=subprocess.DEVNULL)


def test_json_lines_off_a_tty_with_context_fields():
    proc = _emit("auto", subprocess.PIPE)
    _, err = proc.communicate(timeout=30)
    first, second = (orjson.loads(line) for line in err.decode().splitlines())
    assert first["msg"] == "member joined r1"
    assert (first["conn"], first["room"], first["user"]) == ("c1", "r1", "u1")
    assert (first["level"], first["logger"]) == ("info", "pratico.rooms")
    assert first["ts"].endswith("Z")
    assert "conn" not in second and second["msg"] == "no context here"


def test_readable_text_on_a_tty():
    controller, terminal = pty.openpty()
    try:
        proc = _emit("auto", terminal)
        os.close(terminal)
        proc.wait(timeout=30)
        out = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(controller)
    first, second = out.decode().splitlines()
    assert not first.startswith("{")
    assert "INFO    pratico.rooms: member joined r1  [conn=c1 room=r1 user=u1]" in first
    assert second.endswith("pratico.rooms: no context here")


@pytest.mark.parametrize(
    ("message", "args", "extra"),
    [
        ("connect from %s", (f"/ws/conversation?token={JWT}",), {}),
        ("connect %s", ("/sockets/?EIO=4&auth=opaque-access-token-123",), {}),
        ("CONNECT payload %s", ({"token": "opaque-access-token-123"},), {}),
        ("CONNECT payload %s", ('{"access_token":"opaque-access-token-123"}',), {}),
        ("header %s", ("Authorization: Bearer opaque-access-token-123",), {}),
        ("store %s", ("postgresql://pratico:opaque-access-token-123@db/pratico",), {}),
        ("joined", (), {"peer": f"10.0.0.1 {JWT}", "user": "u1"}),
    ],
)
def test_credentials_never_reach_the_output(restore_logging, tmp_path: Path, message, args,
                                            extra):
    for fmt in ("json", "text"):
        path = tmp_path / f"{fmt}.log"
        logs.setup("debug", fmt, str(path))
        try:
            logs.get("test").info(message, *args, extra=extra)
            try:
                raise ValueError(f"rejected {args or extra}")
            except ValueError:
                logs.get("test").exception("while handling")
        finally:
            logs.setup("info", "json", str(tmp_path / "other.log"))  # closes the file
        text = path.read_text()
        assert text.count("\n") >= 2
        assert "opaque-access-token-123" not in text
        assert JWT not in text and "c2lnbmF0dXJlLXNlY3JldA" not in text
        assert "***" in text


async def _talk(url: str, messages: list[str]) -> None:
    """Connect, say `messages`, read what comes back for a moment; a refusal
    (close 4401) is one of the outcomes being logged, not a failure."""
    try:
        async with ws_client(url) as ws:
            for message in messages:
                await ws.send_message(message)
            with trio.move_on_after(0.5):
                while True:
                    await ws.get_message()
    except ConnectionClosed:
        pass


async def test_the_daemon_logs_no_client_token(tmp_path: Path):
    # Debug level, clients presenting valid and invalid tokens in every place
    # the protocol allows: nothing of any token may appear in the log.
    config = write_config(tmp_path / "config.toml", tmp_path / "state", log={"level": "debug"})
    token = Authenticator.from_config(load(config, environ={})).mint("u1", "teacher", "org1")
    async with daemon_process(config) as proc:
        for presented in (token, JWT):
            await _talk(f"{proc.ws_url}/ws/conversation?token={presented}",
                        ['{"type":"nope","ref":1}'])
            await _talk(f"{proc.ws_url}/sockets/?EIO=4&transport=websocket&auth={presented}",
                        ['40/classroom,{"token":"%s"}' % presented])
            await http.get(f"{proc.url}/lessons/x?token={presented}", token=presented)
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit(timeout_s=10) == 0
    output = "\n".join(proc.stderr_lines)
    assert len(proc.stderr_lines) > 3
    for presented in (token, JWT):
        for part in presented.split("."):
            assert part not in output
