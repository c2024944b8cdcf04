"""A minimal asyncio WebSocket client for load generators: text frames only.

The load generator shares this 2-core machine with the server it measures,
so its cost is taken from the server: `websockets`' client spent ~0.7 ms of
CPU per connect + join in bench/classroom_bench.py, as much as the daemon
itself. This one sends gateway_clients.py's handshake and zero-key frames
(the payload goes out as is) from asyncio, at half the generator's CPU. It
is the same client for every server a bench compares.
"""

from __future__ import annotations

import asyncio

from gateway_clients import client_frame, upgrade_request


class RawWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, port: int, path: str) -> RawWebSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(upgrade_request(port, path))
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            writer.close()
            raise ConnectionError(f"handshake refused: {head[:60]!r}")
        return cls(reader, writer)

    def send(self, text: str) -> None:
        self._writer.write(client_frame(text.encode()))

    async def recv(self) -> str:
        """The next text message (control frames answered or skipped)."""
        while True:
            b0, b1 = await self._reader.readexactly(2)
            n = b1 & 0x7F
            if n >= 126:
                n = int.from_bytes(await self._reader.readexactly(2 if n == 126 else 8), "big")
            payload = await self._reader.readexactly(n) if n else b""
            opcode = b0 & 0x0F
            if opcode == 0x1:
                return payload.decode()
            if opcode == 0x8:
                raise ConnectionError(f"closed by the server: {payload[2:]!r}")
            if opcode == 0x9:  # ping: pong with the same payload (zero key, as client_frame)
                self._writer.write(bytes((0x8A, 0x80 | n)) + b"\0\0\0\0" + payload)

    async def close(self) -> None:
        self._writer.write(bytes((0x88, 0x82)) + b"\0\0\0\0" + (1000).to_bytes(2, "big"))
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass
