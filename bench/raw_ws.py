"""A minimal asyncio WebSocket client for load generators: text frames only.

The load generator shares this 2-core machine with the server it measures,
so its cost is taken from the server: `websockets`' client spent ~0.7 ms of
CPU per connect + join in bench/classroom_bench.py, as much as the daemon
itself. This one writes the upgrade request and frames by hand and masks
with the all-zero key (a valid key: the payload goes out as is), so the same
scenario costs the generator several times less. It is the same client for
every server a bench compares.
"""

from __future__ import annotations

import asyncio
import struct

_ZERO_MASK = b"\0\0\0\0"


class RawWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, port: int, path: str) -> RawWebSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            writer.close()
            raise ConnectionError(f"handshake refused: {head[:60]!r}")
        return cls(reader, writer)

    def send(self, text: str) -> None:
        payload = text.encode()
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        self._writer.write(head + _ZERO_MASK + payload)

    async def recv(self) -> str:
        """The next text message (control frames answered or skipped)."""
        while True:
            b0, b1 = await self._reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self._reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self._reader.readexactly(8))
            payload = await self._reader.readexactly(n) if n else b""
            opcode = b0 & 0x0F
            if opcode == 0x1:
                return payload.decode()
            if opcode == 0x8:
                raise ConnectionError(f"closed by the server: {payload[2:]!r}")
            if opcode == 0x9:  # ping: pong with the same payload
                self._writer.write(struct.pack("!BB", 0x8A, 0x80 | n) + _ZERO_MASK + payload)

    async def close(self) -> None:
        self._writer.write(bytes((0x88, 0x82)) + _ZERO_MASK + struct.pack("!H", 1000))
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass
