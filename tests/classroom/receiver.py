"""A tiny HTTP receiver (h11 on trio sockets) standing in for an analytics endpoint.

It records every POST body, answers 200 `1` as Mixpanel's `/track` does, and
can be told to hang (an endpoint that accepts connections but never answers).
"""

from __future__ import annotations

from typing import Any

import h11
import orjson
import trio


class Receiver:
    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.content_types: list[str] = []
        self.hang = False
        self.port = 0
        self.arrived = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/track"

    def events(self) -> list[dict[str, Any]]:
        return [event for batch in self.batches for event in batch]

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = b""
        headers: dict[bytes, bytes] = {}
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    headers = dict(event.headers)
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    return
            if self.hang:
                await trio.sleep_forever()
            self.batches.append(orjson.loads(body))
            self.content_types.append(headers.get(b"content-type", b"").decode())
            self.arrived.set()
            self.arrived = trio.Event()
            reply = conn.send(h11.Response(status_code=200, headers=[
                ("Content-Type", "text/plain"), ("Content-Length", "1")])) or b""
            reply += conn.send(h11.Data(data=b"1")) or b""
            reply += conn.send(h11.EndOfMessage()) or b""
            await stream.send_all(reply)
