"""Server-to-client WebSocket frames, encoded once and sent as the same bytes to many.

A server's frames are never masked (RFC 6455 §5.1), so a frame is a header plus
the payload and the same `bytes` object can go to every member of a room: a
broadcast costs one encode and N `send` calls. Frames here are always final
(FIN set): we never fragment what we send.
"""

from __future__ import annotations

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9

# Close codes (RFC 6455 §7.4 and the 4000-4999 private range we use).
NORMAL = 1000
GOING_AWAY = 1001  # drain: "server shutting down, reconnect"
INVALID_DATA = 1007  # text that is not UTF-8
POLICY = 1008
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013  # no session layer serves this endpoint (yet)
ABNORMAL = 1006  # never sent: the TCP connection ended without a close frame
SLOW_CONSUMER = 4008  # the client did not read fast enough; its outbox overflowed


def _frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 1 << 16:
        return bytes((first, 126)) + n.to_bytes(2, "big") + payload
    return bytes((first, 127)) + n.to_bytes(8, "big") + payload


def encode_text_frame(text: str) -> bytes:
    """A complete text frame carrying `text`, ready for `WebSocket.send_frame_nowait`."""
    return _frame(OP_TEXT, text.encode())


def encode_binary_frame(data: bytes) -> bytes:
    return _frame(OP_BINARY, bytes(data))


def encode_close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to fit the 123 bytes a control frame allows."""
    raw = reason.encode()[:123]
    while raw:
        try:
            raw.decode()
            break
        except UnicodeDecodeError:  # cut inside a character: drop its first bytes
            raw = raw[:-1]
    return _frame(OP_CLOSE, code.to_bytes(2, "big") + raw)


PING_FRAME = _frame(OP_PING, b"")
