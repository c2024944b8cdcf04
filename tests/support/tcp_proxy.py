"""A loopback TCP proxy a test can cut: close every connection, refuse new ones, restore.

Put between a client and a real server (Postgres) to stage an outage without
touching the server: `cut()` is what a failover or a dead route looks like from
the client's side (connections drop mid-query, reconnects fail), `restore()`
is the server coming back.
"""

from __future__ import annotations

from typing import Any

import trio


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.refusing = False
        self.port = 0
        self.accepted = 0
        self._links: set[trio.CancelScope] = set()

    def __repr__(self) -> str:
        state = "CUT" if self.refusing else "OPEN"
        return f"<TcpProxy :{self.port} -> {self.target[1]} {state} {len(self._links)} links>"

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._link, listeners)
            task_status.started(self.port)

    def cut(self) -> None:
        """Drop every open connection now and refuse new ones until `restore()`."""
        self.refusing = True
        for scope in self._links:
            scope.cancel()

    def restore(self) -> None:
        self.refusing = False

    async def _link(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        async with client:
            if self.refusing:
                return
            try:
                upstream = await trio.open_tcp_stream(*self.target)
            except OSError:
                return
            async with upstream:
                with trio.CancelScope() as scope:
                    self._links.add(scope)
                    try:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(_pump, client, upstream, nursery.cancel_scope)
                            nursery.start_soon(_pump, upstream, client, nursery.cancel_scope)
                    finally:
                        self._links.discard(scope)


async def _pump(source: trio.SocketStream, sink: trio.SocketStream,
                done: trio.CancelScope) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()
