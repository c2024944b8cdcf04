"""One server-side WebSocket connection: `websockets`' sans-IO core driven by trio.

Theory of operation
-------------------
The socket is a non-blocking stdlib socket; we wait for it with
`trio.lowlevel.wait_readable/wait_writable` and call `recv`/`send` ourselves,
so a send that fits in the kernel buffer costs one system call and no trip
through the scheduler (docs/discussion/websocket-server.md has the numbers).

- Reading happens in the task that calls `receive()` (the session layer's
  reader task): bytes go into the core (`websockets.protocol.Protocol`, with
  its C speedups), which checks framing, masking, the size limit (1009) and
  answers pings and the closing handshake. We only read when asked, so a
  handler that stops reading pushes back on the client through TCP.
- Writing: `send_frame_nowait(frame)` tries `socket.send` at once when nothing
  is queued; what does not fit goes to the outbox, which the connection's
  writer task drains when the socket turns writable. The outbox is bounded in
  messages and bytes; overflowing it means the client does not read, and the
  connection is closed with 4008 "slow consumer" instead of growing memory.
- Closing: `close(code, reason)` queues a close frame after what is queued;
  `receive()` raises `ConnectionClosed` once the client answers, or after
  `close_timeout_s` if it does not. Every end of
  the connection (our close, the client's close, a protocol error, a lost TCP
  connection, a slow consumer) becomes exactly one `ConnectionClosed(code,
  reason)` for the reader; the front listener closes the socket afterwards.

States: OPEN → CLOSING (a close frame was sent or received) → CLOSED (the
reader has been told). Frames we queue after OPEN are refused (`False`).
"""

from __future__ import annotations

import collections
import enum
import logging
import math
import socket
from collections.abc import Callable
from typing import Literal, cast

import attrs
import trio
from websockets.exceptions import PayloadTooBig
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side

from pratico_daemon import logs
from pratico_daemon.transport import frames

log = logs.get("transport")
# The core logs "connection closed" at INFO for every connection; we log our own.
_core_log = logging.getLogger("pratico.transport.core")
_core_log.setLevel(logging.WARNING)

Framing = Literal["socketio", "json"]
# One recv reads at most this much: it also bounds the messages a single read can
# decode before the reader consumes them (64 KiB / 6-byte minimal frames).
RECV_BYTES = 64 * 1024
# receive()/send_text() that need no I/O yield to the scheduler once per this many.
YIELD_EVERY = 32


class ConnectionClosed(Exception):
    """The connection ended; `code` is the close code (1006 if TCP just ended)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


class State(enum.Enum):
    OPEN = "OPEN"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"


@attrs.define
class Counters:
    """Running totals shared by connections of one framing; the listener flushes them
    into Prometheus once a second (a Counter.inc per frame would cost a fifth of a
    broadcast delivery)."""

    bytes_in: int = 0
    bytes_out: int = 0
    messages_in: int = 0
    messages_out: int = 0


@attrs.frozen
class OutboxLimits:
    messages: int
    bytes: int


class WebSocket:
    """A WebSocket connection after the handshake. Created by the front listener."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        conn_id: str,
        framing: Framing,
        namespace: str | None,
        remote: tuple[str, int],
        max_message_bytes: int,
        outbox: OutboxLimits,
        counters: Counters,
        on_limit: Callable[[str], None] | None = None,
        initial_data: bytes = b"",
        close_timeout_s: float = 2.0,
    ) -> None:
        self._sock = sock
        self.id = conn_id
        self.framing: Framing = framing
        self.namespace = namespace
        self.remote = remote
        self._core = Protocol(Side.SERVER, max_size=max_message_bytes, logger=_core_log)
        self._limits = outbox
        self._counters = counters
        self._on_limit = on_limit
        self.state = State.OPEN
        self._inbox: collections.deque[str | bytes] = collections.deque()
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None
        self._outbox: collections.deque[bytes | memoryview] = collections.deque()
        self._outbox_bytes = 0
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._flushed = trio.Event()
        self._read_scope: trio.CancelScope | None = None
        self._closed_exc: ConnectionClosed | None = None
        self._close_sent: tuple[int, str] | None = None
        self.pong_seen = True  # keepalive: set on every pong, cleared when we ping
        self.keepalive_due = math.inf  # keepalive: when the listener pings next
        self._pending_data = initial_data
        self._unyielded = 0
        self._close_timeout_s = close_timeout_s
        self._read_deadline = math.inf

    def __repr__(self) -> str:
        where = f"/ws/{self.namespace}" if self.namespace else "/sockets/"
        return (
            f"<WebSocket {self.id} {self.framing} {where} {self.remote[0]}:{self.remote[1]} "
            f"{self.state.value} outbox={len(self._outbox)}/{self._outbox_bytes}B>"
        )

    # ---------------------------------------------------------------- reading

    async def receive(self) -> str | bytes:
        """The next message (text as `str`, binary as `bytes`), or `ConnectionClosed`."""
        while True:
            if self._inbox:
                await self._checkpoint()
                return self._inbox.popleft()
            if self._closed_exc is not None:
                await trio.lowlevel.checkpoint()
                raise self._closed_exc
            data: bytes | None
            if self._pending_data:
                data, self._pending_data = self._pending_data, b""
            else:
                data = await self._recv()
            if data is None:
                continue  # woken by our own close: the loop raises _closed_exc
            if data:
                self._feed(data)
            else:
                self._core.receive_eof()
                self._end(frames.ABNORMAL, "connection lost")

    async def _checkpoint(self) -> None:
        """A cancel point always, a schedule point every YIELD_EVERY calls.

        A full `trio.lowlevel.checkpoint()` per message halved echo throughput
        (bench/ws_server_compare.py); the reader yields anyway whenever the
        socket has nothing buffered, and this bounds the run without a yield.
        """
        self._unyielded += 1
        if self._unyielded >= YIELD_EVERY:
            self._unyielded = 0
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    async def _recv(self) -> bytes | None:
        while True:
            try:
                data = self._sock.recv(RECV_BYTES)
            except BlockingIOError:
                self._unyielded = 0
                with trio.CancelScope(deadline=self._read_deadline) as scope:
                    self._read_scope = scope
                    try:
                        await trio.lowlevel.wait_readable(self._sock)
                    except trio.ClosedResourceError:
                        return b""
                    finally:
                        self._read_scope = None
                if scope.cancelled_caught:
                    if self._close_sent is not None and trio.current_time() >= self._read_deadline:
                        self._end(*self._close_sent)  # the client never answered our close
                    return None
                continue
            except OSError:
                return b""
            self._counters.bytes_in += len(data)
            return data

    def _feed(self, data: bytes) -> None:
        core = self._core
        core.receive_data(data)
        for event in core.events_received():
            frame = cast(Frame, event)  # a server-side Protocol only yields frames
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if frame.fin:
                    self._deliver(opcode, bytes(frame.data))
                else:
                    self._fragment_opcode = opcode
                    self._fragments = [bytes(frame.data)]
            elif opcode is Opcode.CONT:
                self._fragments.append(bytes(frame.data))
                if frame.fin and self._fragment_opcode is not None:
                    self._deliver(self._fragment_opcode, b"".join(self._fragments))
                    self._fragments, self._fragment_opcode = [], None
            elif opcode is Opcode.PONG:
                self.pong_seen = True
            elif opcode is Opcode.CLOSE:
                received = core.close_rcvd
                if self._close_sent is not None:  # the client answered our close
                    self._end(*self._close_sent)
                elif received is not None:
                    self._end(received.code, received.reason)
                else:
                    self._end(1005, "")
        exc = core.parser_exc
        if exc is not None and self._closed_exc is None:
            sent = core.close_sent
            code = sent.code if sent is not None else frames.ABNORMAL
            reason = sent.reason if sent is not None else str(exc)
            if isinstance(exc, PayloadTooBig):
                log.info("closing %s: client frame over max_message_bytes", self.id,
                         extra={"conn": self.id, "code": "message_too_large"})
                if self._on_limit is not None:
                    self._on_limit("message_too_large")
            else:
                log.info("closing %s: protocol error (%s)", self.id, exc,
                         extra={"conn": self.id, "code": str(code)})
            self._end(code, reason)
        self._take_core_output()

    def _deliver(self, opcode: Opcode, payload: bytes) -> None:
        if self.state is not State.OPEN:
            return  # after our close frame, only the client's close matters
        if opcode is Opcode.TEXT:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                self._core.fail(frames.INVALID_DATA, "text frame is not UTF-8")
                self._end(frames.INVALID_DATA, "text frame is not UTF-8")
                return
            self._inbox.append(text)
        else:
            self._inbox.append(bytes(payload))
        self._counters.messages_in += 1

    def _end(self, code: int, reason: str) -> None:
        """Record how the connection ended, for the reader; idempotent."""
        if self._closed_exc is None:
            self._closed_exc = ConnectionClosed(code, reason)
        if self.state is State.OPEN:
            self.state = State.CLOSING
        if self._read_scope is not None:
            self._read_scope.cancel()
        self._writer_lot.unpark_all()

    def _take_core_output(self) -> None:
        """Queue what the core wants to send (pongs, close frames) after our frames."""
        for chunk in self._core.data_to_send():
            if chunk:  # b"" means "half-close": we close the socket ourselves later
                self._enqueue(chunk)
        if self._core.close_sent is not None and self._close_sent is None:
            self._close_sent = (self._core.close_sent.code, self._core.close_sent.reason)
            if self.state is State.OPEN:
                self.state = State.CLOSING

    # ---------------------------------------------------------------- writing

    def send_frame_nowait(self, frame: bytes) -> bool:
        """Send a pre-encoded frame (see `encode_text_frame`); never blocks.

        Tries the socket at once when nothing is queued, else queues to the
        writer task. Returns False when the frame was not accepted: the
        connection is closing, or this frame overflowed the outbox, in which case
        the connection is being closed as a slow consumer (4008).
        """
        if self.state is not State.OPEN:
            return False
        if not self._outbox:
            try:
                sent = self._sock.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._end(frames.ABNORMAL, "connection lost")
                return False
            self._counters.bytes_out += sent
            self._counters.messages_out += 1
            if sent == len(frame):
                return True
            self._outbox.append(memoryview(frame)[sent:])
            self._outbox_bytes += len(frame) - sent
            self._writer_lot.unpark_all()
            return True
        if (
            len(self._outbox) >= self._limits.messages
            or self._outbox_bytes + len(frame) > self._limits.bytes
        ):
            self._slow_consumer()
            return False
        self._outbox.append(frame)
        self._outbox_bytes += len(frame)
        self._counters.messages_out += 1
        return True

    async def send_text(self, text: str) -> None:
        """Send one text message; raises `ConnectionClosed` if it cannot be sent.

        Queues like `send_frame_nowait` (same outbox bound), so a reply never
        waits behind a slow client: the client is dropped instead.
        """
        await self._checkpoint()
        if not self.send_frame_nowait(frames.encode_text_frame(text)):
            raise self._closed_exc or ConnectionClosed(*(self._close_sent or (1000, "")))

    async def send_bytes(self, data: bytes) -> None:
        await self._checkpoint()
        if not self.send_frame_nowait(frames.encode_binary_frame(data)):
            raise self._closed_exc or ConnectionClosed(*(self._close_sent or (1000, "")))

    def ping_nowait(self) -> bool:
        """Send a protocol ping (keepalive of /ws/ clients); `pong_seen` turns True on the pong."""
        self.pong_seen = False
        return self.send_frame_nowait(frames.PING_FRAME)

    def _enqueue(self, chunk: bytes | memoryview) -> None:
        """Queue bytes past the outbox bound (control frames must always go out)."""
        self._outbox.append(chunk)
        self._outbox_bytes += len(chunk)
        self._writer_lot.unpark_all()

    def _slow_consumer(self) -> None:
        log.warning(
            "closing %s: slow consumer (outbox %d messages, %d bytes)",
            self.id, len(self._outbox), self._outbox_bytes,
            extra={"conn": self.id, "code": "slow_consumer", "peer": self.remote[0]},
        )
        head = self._outbox[0] if self._outbox and isinstance(self._outbox[0], memoryview) else None
        self._outbox.clear()
        self._outbox_bytes = 0
        if head is not None:  # finish the frame already half on the wire
            self._enqueue(head)
        if self._on_limit is not None:
            self._on_limit("slow_consumer")
        self.close(frames.SLOW_CONSUMER, "slow consumer")
        self._end(frames.SLOW_CONSUMER, "slow consumer")

    async def run_writer(self) -> None:
        """The connection's writer task: drain the outbox until closed and flushed."""
        sock = self._sock
        outbox = self._outbox
        try:
            while True:
                if not outbox:
                    if self.state is not State.OPEN:
                        return
                    await self._writer_lot.park()
                    continue
                head = outbox[0]
                try:
                    sent = sock.send(head)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
                    continue
                self._counters.bytes_out += sent
                self._outbox_bytes -= sent
                if sent == len(head):
                    outbox.popleft()
                else:
                    outbox[0] = memoryview(head)[sent:]
        except (OSError, trio.ClosedResourceError):
            outbox.clear()
            self._outbox_bytes = 0
            self._end(frames.ABNORMAL, "connection lost")
        finally:
            self._flushed.set()

    # ---------------------------------------------------------------- closing

    def close(self, code: int = frames.NORMAL, reason: str = "") -> None:
        """Start the closing handshake (no-op unless OPEN); see `aclose` to wait for it."""
        if self.state is not State.OPEN or self._close_sent is not None:
            return
        self._core.send_close(code, reason)
        self._take_core_output()
        self._writer_lot.unpark_all()
        # The reader waits this long for the client's answer, then gives up.
        self._read_deadline = trio.current_time() + self._close_timeout_s
        if self._read_scope is not None:
            self._read_scope.deadline = self._read_deadline

    async def aclose(self, code: int = frames.NORMAL, reason: str = "") -> None:
        """Close and wait until our close frame is written (bounded by the caller)."""
        self.close(code, reason)
        await self._flushed.wait()

    async def finish(self) -> None:
        """Complete the closing handshake: read (and drop) until the client's close or
        EOF, and wait for the writer to flush. The caller bounds it with a timeout."""
        while True:
            try:
                await self.receive()
            except ConnectionClosed:
                break
        self.state = State.CLOSED
        await self._flushed.wait()

    @property
    def close_code(self) -> int | None:
        return self._closed_exc.code if self._closed_exc else None

    def outbox_size(self) -> tuple[int, int]:
        """(messages, bytes) waiting for the writer task."""
        return len(self._outbox), self._outbox_bytes
