"""The daemon as a real subprocess (`python -m pratico_daemon serve`), for tests
of what only a process has: signals, exit codes, sd_notify, log files.

The test owns a datagram socket and passes it as `$NOTIFY_SOCKET`, exactly as
systemd does; the daemon's `READY=1` datagram carries `STATUS=serving on
HOST:PORT`, which is how the test learns the port it bound (port 0).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio

from tests.conftest import TEST_SECRET

READY_TIMEOUT_S = 30


def write_config(path: Path, state_dir: Path, **sections: Mapping[str, Any]) -> Path:
    """A TOML file for a test daemon: port 0, its own state dir, a long secret."""
    data: dict[str, dict[str, Any]] = {
        "realtime": {"port": 0},
        "storage": {"state_dir": str(state_dir)},
        "auth": {"jwt_secret": TEST_SECRET},
        "daemon": {"shutdown_timeout_s": 5.0},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    lines = []
    for name, values in data.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {orjson.dumps(v).decode()}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@attrs.define
class DaemonProcess:
    process: trio.Process
    notify_sock: trio.socket.SocketType
    notices: list[dict[str, str]] = attrs.Factory(list)
    stderr_lines: list[str] = attrs.Factory(list)
    address: str = ""
    _changed: trio.Event = attrs.Factory(trio.Event)

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.address}"

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def notice_values(self, key: str) -> list[str]:
        """Every value of `key` seen in sd_notify datagrams, in order."""
        return [n[key] for n in self.notices if key in n]

    def log_records(self) -> list[dict[str, Any]]:
        """stderr parsed as JSON lines (the daemon logs JSON when not on a TTY)."""
        return [orjson.loads(line) for line in self.stderr_lines if line.startswith("{")]

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float = 10) -> None:
        """Wait for a new notice or stderr line until `condition()` holds."""
        with trio.fail_after(timeout_s):
            while not condition():
                await self._changed.wait()

    async def wait_exit(self, timeout_s: float) -> int:
        with trio.fail_after(timeout_s):
            return await self.process.wait()

    def _touch(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _pump_notices(self) -> None:
        while True:
            data = await self.notify_sock.recv(4096)
            lines = data.decode().splitlines()
            self.notices.append(dict(line.partition("=")[::2] for line in lines))
            self._touch()

    async def _watch_exit(self) -> None:
        await self.process.wait()
        self._touch()

    async def _pump_stderr(self) -> None:
        assert self.process.stderr is not None
        buffer = b""
        async for chunk in self.process.stderr:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self.stderr_lines.append(line.decode(errors="replace"))
            if lines:
                self._touch()


@asynccontextmanager
async def daemon_process(
    config_file: Path, *, env: Mapping[str, str] | None = None, wait_ready: bool = True,
    command: Sequence[str] = (sys.executable, "-m", "pratico_daemon"),
) -> AsyncIterator[DaemonProcess]:
    """Start `pratico-daemon serve` and yield once it sent READY=1 (port known).

    `command` runs the daemon (default: this interpreter's `-m pratico_daemon`).
    On exit a process that is still running is killed, so a failing test never
    leaves a daemon behind.
    """
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"pratico-test-{uuid.uuid4().hex}"
    await sock.bind("\0" + name)  # abstract: no path-length or cleanup trouble
    child_env = {k: v for k, v in os.environ.items()
                 if not k.startswith(("PRATICO_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    child_env.update({"NOTIFY_SOCKET": "@" + name, "PYTHONUNBUFFERED": "1"})
    child_env.update(env or {})
    with sock:
        async with trio.open_nursery() as nursery:
            process = await trio.lowlevel.open_process(
                [*command, "serve", "--config", str(config_file)], env=child_env,
                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
            )
            running = DaemonProcess(process, sock)
            nursery.start_soon(running._pump_notices)
            nursery.start_soon(running._pump_stderr)
            nursery.start_soon(running._watch_exit)
            try:
                if wait_ready:
                    await running.wait_until(
                        lambda: bool(running.notice_values("READY")) or process.poll() is not None,
                        READY_TIMEOUT_S,
                    )
                    assert process.poll() is None, "\n".join(running.stderr_lines)
                    status = next(n["STATUS"] for n in running.notices if "READY" in n)
                    running.address = status.rpartition(" ")[2]
                yield running
            finally:
                if process.poll() is None:
                    process.kill()
                await process.wait()
                nursery.cancel_scope.cancel()
