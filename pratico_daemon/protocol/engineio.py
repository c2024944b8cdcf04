"""Engine.IO v4 packets, polling payloads and the per-session state machine.

Reference: https://socket.io/docs/v4/engine-io-protocol/. A packet is one
digit (its type) followed by its data: `0{…}` open, `1` close, `2` ping,
`3` pong, `4…` message, `5` upgrade, `6` noop. Over a WebSocket each frame is
one packet and a binary frame is a binary message with no type digit. Over
HTTP long-polling one body carries several packets joined by the record
separator "\\x1e", binary messages written as "b" + base64.

Binary messages only ever carry Socket.IO binary attachments, which the daemon
refuses (PROTOCOL.md §1a); they are decoded here so the caller can drop them.
"""

from __future__ import annotations

import base64
import binascii
import enum
import math
from collections.abc import Iterable, Sequence

import attrs
import orjson

from pratico_daemon.protocol.errors import (
    CLOSE_INVALID_DATA,
    CLOSE_MESSAGE_TOO_BIG,
    LocalProtocolError,
    RemoteProtocolError,
)

RECORD_SEPARATOR = "\x1e"
PROBE = "probe"

# Socket.IO's own defaults (engine.io `pingInterval`, `pingTimeout`,
# `maxHttpBufferSize`): clients already tune their timers to them.
DEFAULT_PING_INTERVAL_S = 25.0
DEFAULT_PING_TIMEOUT_S = 20.0
DEFAULT_MAX_PAYLOAD_BYTES = 1_000_000


class PacketType(enum.IntEnum):
    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


_TYPE_BY_CHAR = {str(int(t)): t for t in PacketType}


@attrs.frozen
class Packet:
    """One Engine.IO packet; `data` is bytes only for a binary MESSAGE."""

    type: PacketType
    data: str | bytes = ""


def encode_packet(packet: Packet) -> str | bytes:
    """A WebSocket frame: text `<digit><data>`, or the raw bytes of a binary message."""
    if isinstance(packet.data, bytes):
        if packet.type is not PacketType.MESSAGE:
            raise LocalProtocolError("internal", "only MESSAGE packets may carry bytes")
        return packet.data
    return f"{int(packet.type)}{packet.data}"


def decode_packet(frame: str | bytes) -> Packet:
    """Decode one WebSocket frame (text or binary) into a packet."""
    if isinstance(frame, bytes | bytearray | memoryview):
        return Packet(PacketType.MESSAGE, bytes(frame))
    if not frame:
        raise RemoteProtocolError(
            "invalid_payload", "empty Engine.IO packet", close_code=CLOSE_INVALID_DATA
        )
    packet_type = _TYPE_BY_CHAR.get(frame[0])
    if packet_type is None:
        raise RemoteProtocolError(
            "invalid_payload",
            f"unknown Engine.IO packet type {frame[:1]!r}",
            close_code=CLOSE_INVALID_DATA,
        )
    return Packet(packet_type, frame[1:])


def encode_payload(packets: Iterable[Packet]) -> str:
    """An HTTP long-polling body: packets joined by "\\x1e", binary as "b" + base64."""
    records = []
    for packet in packets:
        if isinstance(packet.data, bytes):
            records.append("b" + base64.b64encode(packet.data).decode("ascii"))
        else:
            records.append(f"{int(packet.type)}{packet.data}")
    if not records:
        raise LocalProtocolError("internal", "a polling payload needs at least one packet")
    return RECORD_SEPARATOR.join(records)


def decode_payload(
    body: str | bytes, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> list[Packet]:
    """Decode an HTTP long-polling body (a POST from the client) into packets."""
    if isinstance(body, bytes | bytearray | memoryview):
        if len(body) > max_payload_bytes:
            raise _too_large(len(body), max_payload_bytes)
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError(
                "invalid_payload", "polling body is not UTF-8", close_code=CLOSE_INVALID_DATA
            ) from None
    else:
        check_size(body, max_payload_bytes)
    packets = []
    for record in body.split(RECORD_SEPARATOR):
        if record.startswith("b"):
            try:
                data = base64.b64decode(record[1:], validate=True)
            except (binascii.Error, ValueError):
                raise RemoteProtocolError(
                    "invalid_payload", "bad base64 binary packet", close_code=CLOSE_INVALID_DATA
                ) from None
            packets.append(Packet(PacketType.MESSAGE, data))
        else:
            packets.append(decode_packet(record))
    return packets


def encode_open(
    sid: str,
    *,
    upgrades: Sequence[str] = (),
    ping_interval_s: float = DEFAULT_PING_INTERVAL_S,
    ping_timeout_s: float = DEFAULT_PING_TIMEOUT_S,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> str:
    """The open packet: `0{"sid","upgrades","pingInterval","pingTimeout","maxPayload"}` (ms)."""
    return (
        "0"
        + orjson.dumps(
            {
                "sid": sid,
                "upgrades": list(upgrades),
                "pingInterval": round(ping_interval_s * 1000),
                "pingTimeout": round(ping_timeout_s * 1000),
                "maxPayload": max_payload_bytes,
            }
        ).decode()
    )


def check_size(text: str, max_bytes: int) -> None:
    """Raise `message_too_large` (close 1009) if `text` is over `max_bytes` in UTF-8.

    Most frames are short: a text of at most max_bytes/4 code points cannot
    exceed the limit, so only long texts pay for measuring their UTF-8 length.
    """
    if len(text) * 4 <= max_bytes:
        return
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise _too_large(size, max_bytes)


def _too_large(size: int, limit: int) -> RemoteProtocolError:
    return RemoteProtocolError(
        "message_too_large",
        f"{size} bytes is over the limit of {limit}",
        close_code=CLOSE_MESSAGE_TOO_BIG,
    )


# ---------------------------------------------------------------------------
# The session state machine
# ---------------------------------------------------------------------------
#
# Theory of operation
# -------------------
# An `EngineIOSession` is the server's side of one Engine.IO session (one
# `sid`), whatever transport carries it. The transport layer owns the sockets
# and the clock: it feeds every received frame to `receive_frame` (or a polling
# body to `receive_payload`) together with `now`, and carries out the actions
# returned — `Deliver` a message to the Socket.IO layer, `Send` a frame on a
# given transport, `Upgraded` (switch the outgoing queue to the WebSocket),
# `Closed` (tear the transports down). Nothing here sends, sleeps or reads time.
#
# States and triggers (the table `_TRANSITIONS` is the whole truth):
#
#   OPEN ──probe "2probe" on the WebSocket──▶ UPGRADING ──"5" on the WebSocket──▶ OPEN
#     │  (only from polling, if "websocket"      │          (transport := WEBSOCKET)
#     │   was offered in `upgrades`)             │
#     └──── "1" / error / ping timeout / close() ┴──────────────────▶ CLOSED
#
# While UPGRADING, the polling transport keeps working (the client may still
# POST) and a noop `6` is queued on it so that a pending GET returns and the
# client can finish the upgrade. CLOSED is final; frames that race in after
# it are ignored, because over HTTP polling they legitimately do.
#
# Heartbeat (Engine.IO v4: the server pings). After the open packet and after
# each pong, the next ping is due `ping_interval_s` later (`ping_due(now)`,
# `send_ping(now)`); once a ping is out, the client has `ping_timeout_s` to
# answer (`timed_out(now)`). `next_deadline()` tells the transport when to
# wake up next, so one `trio.move_on_at` per loop iteration drives it all.


class Transport(enum.Enum):
    POLLING = "polling"
    WEBSOCKET = "websocket"


class SessionState(enum.Enum):
    OPEN = "OPEN"
    UPGRADING = "UPGRADING"
    CLOSED = "CLOSED"


class _Trigger(enum.Enum):
    PROBE = "probe"
    UPGRADE = "upgrade"
    CLOSE = "close"


_TRANSITIONS: dict[tuple[SessionState, _Trigger], SessionState] = {
    (SessionState.OPEN, _Trigger.PROBE): SessionState.UPGRADING,
    (SessionState.UPGRADING, _Trigger.UPGRADE): SessionState.OPEN,
    (SessionState.OPEN, _Trigger.CLOSE): SessionState.CLOSED,
    (SessionState.UPGRADING, _Trigger.CLOSE): SessionState.CLOSED,
}


@attrs.frozen
class Deliver:
    """A message for the Socket.IO layer (bytes: a binary attachment, to be refused)."""

    data: str | bytes


@attrs.frozen
class Send:
    """A frame the caller must send on `transport` (a pong, "3probe", a noop)."""

    frame: str
    transport: Transport


@attrs.frozen
class Upgraded:
    """The WebSocket is now the session's transport: flush queued packets to it."""


@attrs.frozen
class Closed:
    """The session is over; `close_code` is for the WebSocket, None for a normal close."""

    reason: str
    close_code: int | None = None


Action = Deliver | Send | Upgraded | Closed


class EngineIOSession:
    """Server side of one Engine.IO session; see "Theory of operation" above."""

    # One per connection: slots instead of a dict (bench/gateway_bench.py).
    __slots__ = (
        "_next_ping_at",
        "_pong_deadline",
        "close_reason",
        "max_payload_bytes",
        "ping_interval_s",
        "ping_timeout_s",
        "sid",
        "state",
        "transport",
        "upgrades",
    )

    def __init__(
        self,
        sid: str,
        *,
        now: float,
        transport: Transport = Transport.WEBSOCKET,
        upgrades: Sequence[str] | None = None,
        ping_interval_s: float = DEFAULT_PING_INTERVAL_S,
        ping_timeout_s: float = DEFAULT_PING_TIMEOUT_S,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        first_ping_s: float | None = None,
    ) -> None:
        """`first_ping_s` (default: one interval) lets the server spread the first
        pings of sessions opened together; later pings follow each pong by an interval."""
        self.sid = sid
        self.transport = transport
        # A polling session offers the WebSocket upgrade; a WebSocket one has nowhere to go.
        if upgrades is None:
            upgrades = ("websocket",) if transport is Transport.POLLING else ()
        self.upgrades = tuple(upgrades)
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.max_payload_bytes = max_payload_bytes
        self.state = SessionState.OPEN
        self.close_reason: str | None = None
        self._next_ping_at = now + (ping_interval_s if first_ping_s is None else first_ping_s)
        self._pong_deadline: float | None = None

    def __repr__(self) -> str:
        return f"<EngineIOSession {self.sid} {self.state.name} {self.transport.value}>"

    def open_packet(self) -> str:
        """The `0{…}` packet to send first on the transport that opened the session."""
        return encode_open(
            self.sid,
            upgrades=self.upgrades,
            ping_interval_s=self.ping_interval_s,
            ping_timeout_s=self.ping_timeout_s,
            max_payload_bytes=self.max_payload_bytes,
        )

    # -- input ---------------------------------------------------------------

    def receive_frame(
        self, frame: str | bytes, now: float, *, transport: Transport = Transport.WEBSOCKET
    ) -> list[Action]:
        """Feed one WebSocket frame; returns what the caller must do, in order.

        Raises `RemoteProtocolError` (and the session is CLOSED) for an
        oversized or undecodable frame.
        """
        if self.state is SessionState.CLOSED:
            return []
        try:
            if isinstance(frame, str):
                check_size(frame, self.max_payload_bytes)
            elif len(frame) > self.max_payload_bytes:
                raise _too_large(len(frame), self.max_payload_bytes)
            packet = decode_packet(frame)
        except RemoteProtocolError as exc:
            self._close(exc.code)
            raise
        return self._receive_packet(packet, now, transport)

    def receive_payload(self, body: str | bytes, now: float) -> list[Action]:
        """Feed one HTTP long-polling POST body (several packets)."""
        if self.state is SessionState.CLOSED:
            return []
        try:
            packets = decode_payload(body, max_payload_bytes=self.max_payload_bytes)
        except RemoteProtocolError as exc:
            self._close(exc.code)
            raise
        actions: list[Action] = []
        for packet in packets:
            actions.extend(self._receive_packet(packet, now, Transport.POLLING))
            if self.state is SessionState.CLOSED:
                break
        return actions

    def _receive_packet(self, packet: Packet, now: float, via: Transport) -> list[Action]:
        kind = packet.type
        if kind is PacketType.MESSAGE:
            return [Deliver(packet.data)]
        if kind is PacketType.PONG:
            self.pong_received(now)
            return []
        if kind is PacketType.PING:
            if (
                packet.data == PROBE
                and via is Transport.WEBSOCKET
                and self.transport is Transport.POLLING
                and "websocket" in self.upgrades
            ):
                self._transition(_Trigger.PROBE)
                return [Send("3" + PROBE, Transport.WEBSOCKET), Send("6", Transport.POLLING)]
            # Engine.IO v3 clients ping the server; answering costs nothing.
            return [Send("3" + str(packet.data), via)]
        if kind is PacketType.UPGRADE:
            if self.state is not SessionState.UPGRADING or via is not Transport.WEBSOCKET:
                self._close("invalid_payload")
                raise RemoteProtocolError(
                    "invalid_payload", "upgrade without a probe", close_code=CLOSE_INVALID_DATA
                )
            self._transition(_Trigger.UPGRADE)
            self.transport = Transport.WEBSOCKET
            return [Upgraded()]
        if kind is PacketType.CLOSE:
            self._close("client close")
            return [Closed("client close")]
        if kind is PacketType.NOOP:
            return []
        # OPEN is sent by servers only.
        self._close("invalid_payload")
        raise RemoteProtocolError(
            "invalid_payload", "clients do not send open packets", close_code=CLOSE_INVALID_DATA
        )

    # -- heartbeat -------------------------------------------------------------

    def ping_due(self, now: float) -> bool:
        """True when the transport should call `send_ping(now)` and send its result."""
        return (
            self.state is not SessionState.CLOSED
            and self._pong_deadline is None
            and now >= self._next_ping_at
        )

    def send_ping(self, now: float) -> str:
        """Start a ping: the client must answer within `ping_timeout_s`. Returns "2"."""
        if self.state is SessionState.CLOSED:
            raise LocalProtocolError("internal", "ping on a closed session")
        self._pong_deadline = now + self.ping_timeout_s
        return "2"

    def pong_received(self, now: float) -> None:
        """The client answered: the next ping is due one interval from now."""
        self._pong_deadline = None
        self._next_ping_at = now + self.ping_interval_s

    def timed_out(self, now: float) -> bool:
        """True when a ping went unanswered for `ping_timeout_s` (then call `close`)."""
        return self._pong_deadline is not None and now >= self._pong_deadline

    def next_deadline(self) -> float:
        """When the transport must wake up next: the pong deadline or the next ping."""
        if self.state is SessionState.CLOSED:
            return math.inf
        return self._pong_deadline if self._pong_deadline is not None else self._next_ping_at

    # -- closing ------------------------------------------------------------------

    def close(self, reason: str = "server close") -> str:
        """Close from our side; returns the `1` packet to send if the transport still works."""
        self._close(reason)
        return "1"

    def _close(self, reason: str) -> None:
        if self.state is not SessionState.CLOSED:
            self._transition(_Trigger.CLOSE)
            self.close_reason = reason

    def _transition(self, trigger: _Trigger) -> None:
        try:
            self.state = _TRANSITIONS[self.state, trigger]
        except KeyError:
            # Any refused transition ends the session: the peer is out of step.
            self.state = SessionState.CLOSED
            self.close_reason = "invalid_payload"
            raise RemoteProtocolError(
                "invalid_payload",
                f"{trigger.value} not allowed in state {self.state.name}",
                close_code=CLOSE_INVALID_DATA,
            ) from None
