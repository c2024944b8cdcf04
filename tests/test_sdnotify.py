"""sd_notify against a real datagram socket, as systemd would hold it.

The daemon runs as a subprocess with `$NOTIFY_SOCKET` pointing at a socket this
test bound and `$WATCHDOG_USEC` set small, then gets SIGTERM.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import trio

from pratico_daemon.sdnotify import Notifier
from tests.support import http
from tests.support.process import daemon_process, write_config

WATCHDOG_USEC = 400_000  # the daemon pings every 0.2 s


async def test_ready_watchdog_stopping_then_exit_0(tmp_path: Path):
    config = write_config(tmp_path / "config.toml", tmp_path / "state")
    async with daemon_process(config, env={"WATCHDOG_USEC": str(WATCHDOG_USEC)}) as proc:
        ready = next(n for n in proc.notices if "READY" in n)
        assert ready["READY"] == "1"
        host, _, port = proc.address.rpartition(":")
        assert host == "127.0.0.1"
        assert int(port) > 0
        # READY=1 means the listener is bound and the daemon is ready.
        assert (await http.get(f"{proc.url}/readyz")).status == 200

        await proc.wait_until(lambda: len(proc.notice_values("WATCHDOG")) >= 4, timeout_s=5)
        assert set(proc.notice_values("WATCHDOG")) == {"1"}

        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit(timeout_s=5) == 0
        assert proc.notice_values("STOPPING") == ["1"]
        # STOPPING comes after READY, and nothing is READY again after it.
        kinds = [k for n in proc.notices for k in n if k in {"READY", "STOPPING"}]
        assert kinds == ["READY", "STOPPING"]


async def test_no_watchdog_without_watchdog_usec(tmp_path: Path):
    config = write_config(tmp_path / "config.toml", tmp_path / "state")
    async with daemon_process(config) as proc:
        await trio.sleep(0.5)
        assert proc.notice_values("WATCHDOG") == []
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit(timeout_s=5) == 0


async def test_watchdog_for_another_pid_is_ignored(tmp_path: Path):
    # WATCHDOG_PID names the process systemd watches; a child that inherited
    # the variables must not ping on its behalf (sd_watchdog_enabled(3)).
    config = write_config(tmp_path / "config.toml", tmp_path / "state")
    env = {"WATCHDOG_USEC": str(WATCHDOG_USEC), "WATCHDOG_PID": "1"}
    async with daemon_process(config, env=env) as proc:
        await trio.sleep(0.5)
        assert proc.notice_values("WATCHDOG") == []
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit(timeout_s=5) == 0


async def test_notifier_path_socket_and_unset(tmp_path: Path):
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        notifier = Notifier(str(path))
        notifier.notify("STATUS=hello", "READY=1")
        assert server.recv(4096) == b"STATUS=hello\nREADY=1"
        notifier.close()
    # Outside systemd every call is a no-op, and a vanished socket is not fatal.
    Notifier(None).notify("READY=1")
    gone = Notifier(str(tmp_path / "gone"))
    gone.notify("READY=1")
    gone.close()
