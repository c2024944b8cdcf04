"""A small ASGI bridge: the front listener hands plain HTTP requests to the quart-trio app.

Only what the app needs: the `http` scope with the whole body already read (the
listener enforces the size limit before the app sees a byte), the response
collected whole and returned (so a cancelled request never leaves half a
response on a keep-alive connection), and the `lifespan` protocol run for the
listener's life so quart-trio's startup/shutdown hooks run. The app owns no
tasks; the lifespan's nursery is quart-trio's and only lives inside `lifespan()`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from pratico_daemon.transport.http import Request, Response

# (scope, receive, send): loose on purpose, so that typed apps (QuartTrio) fit.
AsgiApp = Callable[..., Awaitable[None]]
_ASGI = {"version": "3.0", "spec_version": "2.3"}
# quart-trio's shutdown hooks are quick; past this the listener stops waiting.
LIFESPAN_SHUTDOWN_S = 2.0


class LifespanFailed(RuntimeError):
    pass


class AsgiBridge:
    def __init__(self, app: AsgiApp) -> None:
        self.app = app
        self._state: dict[str, Any] = {}

    async def lifespan(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the app's startup, report started, and its shutdown when cancelled."""
        to_app_send, to_app_recv = trio.open_memory_channel[dict[str, Any]](1)
        from_app_send, from_app_recv = trio.open_memory_channel[dict[str, Any]](1)
        scope = {"type": "lifespan", "asgi": _ASGI, "state": self._state}
        # The app's lifespan task is shielded from our owner's cancellation so that
        # it is still there to run its shutdown hooks; we cancel it ourselves after.
        app_scope = trio.CancelScope(shield=True)

        async def run_app() -> None:
            with app_scope:
                await self.app(scope, to_app_recv.receive, from_app_send.send)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_app)
            try:
                await to_app_send.send({"type": "lifespan.startup"})
                reply = await from_app_recv.receive()
                if reply["type"] != "lifespan.startup.complete":
                    raise LifespanFailed(reply.get("message", "ASGI startup failed"))
                task_status.started()
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(LIFESPAN_SHUTDOWN_S):
                    await to_app_send.send({"type": "lifespan.shutdown"})
                    await from_app_recv.receive()
                app_scope.cancel()

    async def handle(self, request: Request, body: bytes, server: tuple[str, int]) -> Response:
        """Run one request through the app and return its whole response."""
        raw_path = request.path.encode("utf-8", "surrogateescape")
        scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": "1.1",
            "method": request.method,
            "scheme": "http",
            "path": request.path,
            "raw_path": raw_path,
            "query_string": request.raw_query.encode("latin-1"),
            "root_path": "",
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers],
            "client": request.client,
            "server": server,
            "state": dict(self._state),
            "extensions": {},
        }
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await trio.sleep_forever()  # the client is gone only when we stop serving it
            raise AssertionError("unreachable")

        status = 500
        headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers.extend(
                    (bytes(k).decode("latin-1"), bytes(v).decode("latin-1"))
                    for k, v in message.get("headers", ())
                )
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))

        await self.app(scope, receive, send)
        content_type = "application/octet-stream"
        kept: list[tuple[str, str]] = []
        for name, value in headers:
            lower = name.lower()
            if lower == "content-type":
                content_type = value
            elif lower not in ("content-length", "transfer-encoding", "connection"):
                kept.append((name, value))
        return Response(status, b"".join(chunks), content_type, tuple(kept))
