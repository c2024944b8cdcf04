"""sd_notify(3) spoken directly: one datagram per state change to $NOTIFY_SOCKET.

No libsystemd binding: the protocol is a newline-separated `KEY=VALUE` datagram
on a unix socket (abstract when the path starts with `@`). Outside systemd
`$NOTIFY_SOCKET` is unset and every call is a no-op.
"""

from __future__ import annotations

import os
import socket

import trio

from pratico_daemon import logs

log = logs.get("sdnotify")


class Notifier:
    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        if address:
            if address.startswith("@"):
                address = "\0" + address[1:]
            self._target = address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @classmethod
    def from_env(cls) -> Notifier:
        return cls(os.environ.get("NOTIFY_SOCKET"))

    @staticmethod
    def watchdog_interval_s() -> float | None:
        """Half of WatchdogSec, as sd_watchdog_enabled(3) advises; None when off."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 1_000_000 / 2
        except ValueError:
            return None

    def notify(self, *states: str) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto("\n".join(states).encode(), self._target)
        except OSError as exc:  # systemd gone or socket full: never fatal.
            log.warning("sd_notify failed: %s", exc)

    async def watchdog_loop(self, interval_s: float) -> None:
        while True:
            self.notify("WATCHDOG=1")
            await trio.sleep(interval_s)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
