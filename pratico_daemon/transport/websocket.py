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
  is queued; what does not fit goes to the outbox, and only then is a writer
  task started (in the nursery the listener gave us) to drain it when the
  socket turns writable; it ends once the outbox is empty. An idle connection
  thus has no writer task, no outbox and nothing parked (a parked writer cost
  ~3 KB per connection, bench/gateway_bench.py). The outbox is bounded in
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
    """A WebSocket connection after the handshake. Created by the front listener.

    `writers` is the nursery the writer task runs in while the outbox is not
    empty; its owner (the front listener) ends it with `stop_writer()` before
    it closes the socket.
    """

    # Slots: a dict-less instance of ~30 attributes (bench/gateway_bench.py).
    __slots__ = (
        "_close_sent",
        "_close_timeout_s",
        "_closed_exc",
        "_core",
        "_counters",
        "_fragment_opcode",
        "_fragments",
        "_inbox",
        "_limits",
        "_on_limit",
        "_outbox",
        "_outbox_bytes",
        "_pending_data",
        "_read_deadline",
        "_read_scope",
        "_sock",
        "_unyielded",
        "_writer_scope",
        "_writers",
        "_written",
        "framing",
        "id",
        "keepalive_due",
        "namespace",
        "pong_seen",
        "remote",
        "state",
    )

    def __init__(
        self,
        sock: socket.socket,
        *,
        writers: trio.Nursery,
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
        self._writers = writers
        self.id = conn_id
        self.framing: Framing = framing
        self.namespace = namespace
        self.remote = remote
        self._core = Protocol(Side.SERVER, max_size=max_message_bytes, logger=_core_log)
        self._limits = outbox
        self._counters = counters
        self._on_limit = on_limit
        self.state = State.OPEN
        # Messages decoded by the last read, newest first (`receive` pops from the
        # end): an empty list is 56 bytes, an empty deque 760.
        self._inbox: list[str | bytes] = []
        self._fragments: list[bytes] | None = None  # only inside a fragmented message
        self._fragment_opcode: Opcode | None = None
        # Made when a send does not fit in the socket, dropped once drained (760 B).
        self._outbox: collections.deque[bytes | memoryview] | None = None
        self._outbox_bytes = 0
        self._writer_scope: trio.CancelScope | None = None  # set while a writer task runs
        self._written: trio.Event | None = None  # made when someone waits for the writer
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
            f"{self.state.value} outbox={len(self._outbox or ())}/{self._outbox_bytes}B>"
        )

    # ---------------------------------------------------------------- reading

    async def receive(self) -> str | bytes:
        """The next message (text as `str`, binary as `bytes`), or `ConnectionClosed`."""
        while True:
            if self._inbox:
                await self._checkpoint()
                return self._inbox.pop()
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
                self._inbox.reverse()  # oldest last, for pop()
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
                data = None
            except OSError:
                return b""
            if data is not None:
                self._counters.bytes_in += len(data)
                return data
            # Wait outside the `except` block: there, the BlockingIOError and its
            # traceback stayed alive as long as the connection idled (~600 B).
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
                if self._fragments is None:
                    self._fragments = []
                self._fragments.append(bytes(frame.data))
                if frame.fin and self._fragment_opcode is not None:
                    self._deliver(self._fragment_opcode, b"".join(self._fragments))
                    self._fragments, self._fragment_opcode = None, None
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
        outbox = self._outbox
        if not outbox:
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
            self._enqueue(memoryview(frame)[sent:])
            return True
        if (
            len(outbox) >= self._limits.messages
            or self._outbox_bytes + len(frame) > self._limits.bytes
        ):
            self._slow_consumer()
            return False
        outbox.append(frame)
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
        """Queue bytes past the outbox bound (control frames must always go out),
        and start the writer task if it is not running."""
        if self._outbox is None:
            self._outbox = collections.deque()
        self._outbox.append(chunk)
        self._outbox_bytes += len(chunk)
        if self._writer_scope is None and self.state is not State.CLOSED:
            self._writer_scope = trio.CancelScope()
            try:
                self._writers.start_soon(self._write_outbox, self._writer_scope)
            except RuntimeError:  # the listener's nursery is closing: nothing will be sent
                self._writer_scope = None

    def _slow_consumer(self) -> None:
        log.warning(
            "closing %s: slow consumer (outbox %d messages, %d bytes)",
            self.id, len(self._outbox or ()), self._outbox_bytes,
            extra={"conn": self.id, "code": "slow_consumer", "peer": self.remote[0]},
        )
        outbox = self._outbox
        head = outbox[0] if outbox and isinstance(outbox[0], memoryview) else None
        if outbox:
            outbox.clear()
        self._outbox_bytes = 0
        if head is not None:  # finish the frame already half on the wire
            self._enqueue(head)
        if self._on_limit is not None:
            self._on_limit("slow_consumer")
        self.close(frames.SLOW_CONSUMER, "slow consumer")
        self._end(frames.SLOW_CONSUMER, "slow consumer")

    async def _write_outbox(self, scope: trio.CancelScope) -> None:
        """The writer task: drain the outbox as the socket turns writable, then end.

        It runs in the listener's nursery, not in the connection's task, so it
        must never raise: a failure ends the connection, not the listener.
        """
        sock = self._sock
        outbox = self._outbox
        try:
            with scope:
                while outbox:
                    head = outbox[0]
                    try:
                        sent = sock.send(head)
                    except BlockingIOError:
                        sent = -1
                    if sent < 0:
                        await trio.lowlevel.wait_writable(sock)
                        continue
                    self._counters.bytes_out += sent
                    self._outbox_bytes -= sent
                    if sent == len(head):
                        outbox.popleft()
                    else:
                        outbox[0] = memoryview(head)[sent:]
                if self._outbox is outbox:
                    self._outbox = None  # drained: an idle connection keeps no deque
        except (OSError, trio.ClosedResourceError):
            self._drop_outbox()
            self._end(frames.ABNORMAL, "connection lost")
        except Exception:
            log.exception("writer of %s failed", self.id, extra={"conn": self.id})
            self._drop_outbox()
            self._end(frames.ABNORMAL, "connection lost")
        finally:
            self._writer_scope = None
            if self._written is not None:
                self._written.set()
                self._written = None

    def _drop_outbox(self) -> None:
        if self._outbox is not None:
            self._outbox.clear()
        self._outbox = None
        self._outbox_bytes = 0

    async def _wait_written(self) -> None:
        """Until the writer task (if one runs) has emptied the outbox and ended."""
        if self._writer_scope is None:
            await trio.lowlevel.checkpoint()
            return
        if self._written is None:
            self._written = trio.Event()
        await self._written.wait()

    def stop_writer(self) -> None:
        """For the listener, before it closes the socket: no more writing, ever."""
        self.state = State.CLOSED
        if self._writer_scope is not None:
            self._writer_scope.cancel()

    # ---------------------------------------------------------------- closing

    def close(self, code: int = frames.NORMAL, reason: str = "") -> None:
        """Start the closing handshake (no-op unless OPEN); see `aclose` to wait for it."""
        if self.state is not State.OPEN or self._close_sent is not None:
            return
        self._core.send_close(code, reason)
        self._take_core_output()
        # The reader waits this long for the client's answer, then gives up.
        self._read_deadline = trio.current_time() + self._close_timeout_s
        if self._read_scope is not None:
            self._read_scope.deadline = self._read_deadline

    async def aclose(self, code: int = frames.NORMAL, reason: str = "") -> None:
        """Close and wait until our close frame is written (bounded by the caller)."""
        self.close(code, reason)
        await self._wait_written()

    async def finish(self) -> None:
        """Complete the closing handshake: read (and drop) until the client's close or
        EOF, and wait for the writer to flush. The caller bounds it with a timeout."""
        while True:
            try:
                await self.receive()
            except ConnectionClosed:
                break
        self.state = State.CLOSED
        await self._wait_written()

    @property
    def close_code(self) -> int | None:
        return self._closed_exc.code if self._closed_exc else None

    def outbox_size(self) -> tuple[int, int]:
        """(messages, bytes) waiting for the writer task."""
        return len(self._outbox or ()), self._outbox_bytes
