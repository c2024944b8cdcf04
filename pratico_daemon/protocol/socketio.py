"""Socket.IO v5 packets inside Engine.IO v4 messages (PROTOCOL.md §1a).

Reference: https://socket.io/docs/v4/socket-io-protocol/. A packet is written
`<type>[<#attachments>-][<namespace>,][<ack id>][JSON]`, the namespace "/"
being omitted: `2/classroom,17["join_lesson",{…}]`. Inside an Engine.IO
message it gains a leading `4`, which is what goes on the wire.

Decoding (`decode_packet`) takes the Socket.IO text (the data of an Engine.IO
message) and returns a `Connect`, `Disconnect`, `Event`, `Ack` or
`ConnectError`. It parses the header by hand before touching the JSON, so that
whenever an ack id can be recovered a bad packet is answered with an ERROR ack
(`RemoteProtocolError.reply`) instead of killing the connection.

Encoding is on the broadcast hot path (one encode per broadcast, DESIGN.md
"Encode once, send many"): the `encode_*_frame` functions build the whole
Engine.IO text (`42/classroom,["name",{…}]`) with one orjson call and string
concatenation, and validated namespace prefixes are cached.
"""

from __future__ import annotations

import enum
import re
from typing import Any

import attrs
import orjson

from pratico_daemon.protocol.engineio import check_size
from pratico_daemon.protocol.errors import (
    CLOSE_INVALID_DATA,
    LocalProtocolError,
    RemoteProtocolError,
)
from pratico_daemon.protocol.event import Event, error

# PROTOCOL.md §1c / LimitsSection.max_message_bytes: 64 KiB covers an SDP offer.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
# Our namespaces are at most 13 characters; 64 leaves room for new products
# and bounds what a client can make us parse and echo back.
DEFAULT_MAX_NAMESPACE_CHARS = 64
# Event names are identifiers like "join_lesson"; 128 is generous and bounded.
DEFAULT_MAX_NAME_CHARS = 128
# Acks ids are JavaScript numbers on the client: 15 digits stay below 2**53.
_MAX_ACK_DIGITS = 15

_DIGITS = frozenset("0123456789")
_DIGITS_RE = re.compile(r"[0-9]*")
# A namespace is a URL path: "/" then the characters RFC 3986 allows in a path
# segment, plus "/". "," would end it in the header, and "?" or "#" would be
# read as a query by some clients (python-socketio strips "?…"), so both are out.
NAMESPACE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/!$&'()*+;=:@%"
_NAMESPACE_RE = re.compile("/[" + re.escape(NAMESPACE_CHARS) + r"]*\Z")


class PacketType(enum.IntEnum):
    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


@attrs.frozen
class Connect:
    """CONNECT: from a client `data` is its `auth` object; from the server `{"sid", …}`."""

    namespace: str
    data: dict[str, Any] | None = None


@attrs.frozen
class Disconnect:
    namespace: str


@attrs.frozen
class Ack:
    """ACK of the event numbered `ack`, with the acknowledgement's arguments."""

    namespace: str
    ack: int
    args: tuple[Any, ...] = ()


@attrs.frozen
class ConnectError:
    """CONNECT_ERROR: `{"message": …, "data": …}` (servers send it; clients never do)."""

    namespace: str
    message: str
    data: Any = None


Packet = Connect | Disconnect | Event | Ack | ConnectError

_TYPE_BY_CHAR = {str(int(t)): t for t in PacketType}


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------

_PREFIX_CACHE: dict[str, str] = {}
_PREFIX_CACHE_MAX = 256


def valid_namespace(namespace: str, max_chars: int = DEFAULT_MAX_NAMESPACE_CHARS) -> bool:
    """True for "/" followed by URL path characters (`NAMESPACE_CHARS`), at most `max_chars`."""
    return len(namespace) <= max_chars and _NAMESPACE_RE.match(namespace) is not None


def _prefix(namespace: str) -> str:
    """The header part naming the namespace: "" for "/", else "/ns,"."""
    try:
        return _PREFIX_CACHE[namespace]
    except KeyError:
        pass
    if not valid_namespace(namespace):
        raise LocalProtocolError("internal", f"invalid namespace {namespace[:80]!r}")
    prefix = "" if namespace == "/" else namespace + ","
    if len(_PREFIX_CACHE) < _PREFIX_CACHE_MAX:
        _PREFIX_CACHE[namespace] = prefix
    return prefix


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise LocalProtocolError("internal", f"payload is not JSON: {exc}") from None


def _ack_text(ack: int | str | None) -> str:
    if ack is None:
        return ""
    if type(ack) is not int or not 0 <= ack < 10**_MAX_ACK_DIGITS:
        raise LocalProtocolError("internal", f"Socket.IO ack ids are small ints, not {ack!r}")
    return str(ack)


def encode_event_frame(
    namespace: str,
    name: str,
    payload: Any,
    *,
    ack: int | None = None,
    offset: str | None = None,
) -> str:
    """`42/ns,["name",{…}]`: a server EVENT as the Engine.IO text to send.

    `offset` is appended as the last argument, which is how Socket.IO's
    connection-state recovery tells a client the id of the event it saw.
    """
    args = [name, payload] if offset is None else [name, payload, offset]
    return "42" + _prefix(namespace) + _ack_text(ack) + _dumps(args)


def encode_event_frame_bytes(namespace: str, name: str, payload: Any) -> bytes:
    """`encode_event_frame` as UTF-8 bytes, for transports that send bytes (no re-encoding)."""
    try:
        body = orjson.dumps([name, payload])
    except TypeError as exc:
        raise LocalProtocolError("internal", f"payload is not JSON: {exc}") from None
    return b"42" + _prefix(namespace).encode("ascii") + body


def encode_ack_frame(namespace: str, ack: int, *args: Any) -> str:
    """`43/ns,17[…]`: the answer to the client's event number `ack`.

    The daemon always answers with one reply object (`success(…)`/`error(…)`).
    """
    return "43" + _prefix(namespace) + _ack_text(ack) + _dumps(args)


def encode_connect_frame(namespace: str, sid: str, **extra: Any) -> str:
    """`40/ns,{"sid":"…"}`; `extra` carries e.g. `pid` for connection-state recovery."""
    return "40" + _prefix(namespace) + _dumps({"sid": sid, **extra})


def encode_connect_error_frame(namespace: str, code: str, message: str = "", **data: Any) -> str:
    """`44/ns,{"message":"…","data":{"code":"…",…}}`: a refused namespace connection."""
    body = {"message": message or code.replace("_", " "), "data": {"code": code, **data}}
    return "44" + _prefix(namespace) + _dumps(body)


def encode_disconnect_frame(namespace: str) -> str:
    """`41/ns,`: the server disconnects the client from a namespace."""
    return "41" + _prefix(namespace)


def encode_packet(packet: Packet) -> str:
    """The Socket.IO text of any packet (without the Engine.IO `4`)."""
    return _encode_frame(packet)[1:]


def encode_frame(packet: Packet) -> str:
    """The Engine.IO message text of any packet: `4` + `encode_packet(packet)`."""
    return _encode_frame(packet)


def _encode_frame(packet: Packet) -> str:
    if isinstance(packet, Event):
        if not isinstance(packet.ack, int | None):
            raise LocalProtocolError("internal", "Socket.IO ack ids are ints")
        return encode_event_frame(packet.namespace, packet.name, packet.payload, ack=packet.ack)
    if isinstance(packet, Ack):
        return encode_ack_frame(packet.namespace, packet.ack, *packet.args)
    if isinstance(packet, Connect):
        tail = "" if packet.data is None else _dumps(packet.data)
        return "40" + _prefix(packet.namespace) + tail
    if isinstance(packet, Disconnect):
        return encode_disconnect_frame(packet.namespace)
    if isinstance(packet, ConnectError):
        body = {"message": packet.message}
        if packet.data is not None:
            body["data"] = packet.data
        return "44" + _prefix(packet.namespace) + _dumps(body)
    raise LocalProtocolError("internal", f"not a Socket.IO packet: {packet!r}")


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


def _invalid(message: str) -> RemoteProtocolError:
    return RemoteProtocolError("invalid_payload", message, close_code=CLOSE_INVALID_DATA)


def _answerable(
    code: str, message: str, namespace: str, ack: int | None, *, close_code: int | None
) -> RemoteProtocolError:
    """An error about an event whose ack id we know: answered by an ERROR ack."""
    reply = None if ack is None else encode_ack_frame(namespace, ack, error(code, message))
    return RemoteProtocolError(
        code, message, close_code=close_code, ack=ack, namespace=namespace, reply=reply
    )


def decode_packet(
    text: str,
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_namespace_chars: int = DEFAULT_MAX_NAMESPACE_CHARS,
    max_name_chars: int = DEFAULT_MAX_NAME_CHARS,
) -> Packet:
    """Decode the Socket.IO text of one Engine.IO message (without its `4`).

    Raises `RemoteProtocolError` only; see docs/reference/protocol-codecs.md
    for which input gets which code, reply and close code.
    """
    if not isinstance(text, str):
        raise RemoteProtocolError(
            "binary_not_supported", "binary Engine.IO message", close_code=None
        )
    n = len(text)
    kind = _TYPE_BY_CHAR.get(text[:1])
    if kind is None:
        raise _invalid("unknown Socket.IO packet type")
    i = 1
    if kind is PacketType.BINARY_EVENT or kind is PacketType.BINARY_ACK:
        dash = text.find("-", 1, 1 + _MAX_ACK_DIGITS)
        if dash == -1 or not set(text[1:dash]) <= _DIGITS:
            raise _invalid("bad attachment count")
        i = dash + 1

    namespace = "/"
    if i < n and text[i] == "/":
        comma = text.find(",", i, i + max_namespace_chars + 1)
        end = comma if comma != -1 else n
        namespace = text[i:end]
        if len(namespace) > max_namespace_chars or (
            namespace not in _PREFIX_CACHE and _NAMESPACE_RE.match(namespace) is None
        ):
            raise _invalid("invalid namespace")
        i = end + 1 if comma != -1 else n

    ack: int | None = None
    j = _DIGITS_RE.match(text, i).end()  # type: ignore[union-attr]  # matches "" at worst
    if j > i:
        if j - i > _MAX_ACK_DIGITS:
            raise _invalid("ack id too long")
        ack = int(text[i:j])
        i = j

    if kind is PacketType.BINARY_EVENT or kind is PacketType.BINARY_ACK:
        # Only a BINARY_EVENT waits for an answer; a BINARY_ACK is dropped.
        answer_to = ack if kind is PacketType.BINARY_EVENT else None
        raise _answerable(
            "binary_not_supported",
            "binary packets are not supported",
            namespace,
            answer_to,
            close_code=None,
        )

    if n * 4 > max_bytes:  # only long texts can be over the limit (check_size)
        check_size_answerable(text, max_bytes, namespace, ack if kind is PacketType.EVENT else None)
    data = text[i:]

    if kind is PacketType.EVENT:
        # The hot path (every client event): inline the happy case, fall back
        # to `_decode_event` for the error messages.
        args = _loads(data, namespace, ack)
        if type(args) is list and args:
            name = args[0]
            payload = args[1] if len(args) > 1 else {}
            if type(name) is str and 0 < len(name) <= max_name_chars and type(payload) is dict:
                return Event(namespace, name, payload, ack)
        raise _event_refusal(args, namespace, ack, max_name_chars)
    if kind is PacketType.ACK:
        if ack is None:
            raise _invalid("ACK without an id")
        args = _loads(data, namespace, None)
        if not isinstance(args, list):
            raise _invalid("ACK arguments must be an array")
        return Ack(namespace, ack, tuple(args))
    if ack is not None:
        raise _invalid(f"{kind.name} packets carry no ack id")
    if kind is PacketType.CONNECT:
        if not data:
            return Connect(namespace, None)
        auth = _loads(data, namespace, None)
        if not isinstance(auth, dict):
            message = "the CONNECT payload must be an object"
            raise RemoteProtocolError(
                "invalid_payload",
                message,
                close_code=CLOSE_INVALID_DATA,
                namespace=namespace,
                reply=encode_connect_error_frame(namespace, "invalid_payload", message),
            )
        return Connect(namespace, auth)
    if kind is PacketType.DISCONNECT:
        if data:
            raise _invalid("DISCONNECT carries no data")
        return Disconnect(namespace)
    # CONNECT_ERROR
    body = _loads(data, namespace, None) if data else None
    if isinstance(body, str):  # the Socket.IO v4 (protocol v4) form
        return ConnectError(namespace, body)
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        raise _invalid('CONNECT_ERROR needs {"message": …}')
    return ConnectError(namespace, body["message"], body.get("data"))


def check_size_answerable(text: str, max_bytes: int, namespace: str, ack: int | None) -> None:
    """`message_too_large` (close 1009), answered by an ERROR ack when the ack id is known."""
    try:
        check_size(text, max_bytes)
    except RemoteProtocolError as exc:
        raise _answerable(
            exc.code, exc.message, namespace, ack, close_code=exc.close_code
        ) from None


def _loads(data: str, namespace: str, ack: int | None) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise _answerable(
            "invalid_payload", "not valid JSON", namespace, ack, close_code=CLOSE_INVALID_DATA
        ) from None


def _event_refusal(
    args: Any, namespace: str, ack: int | None, max_name_chars: int
) -> RemoteProtocolError:
    """Why a parsed EVENT is refused (answered with an ERROR ack when `ack` is known)."""
    if not isinstance(args, list) or not args:
        message = "an EVENT is a non-empty array"
    elif not isinstance(args[0], str) or not args[0] or len(args[0]) > max_name_chars:
        message = "the event name must be a short string"
    else:
        message = "the event payload must be an object"
    return _answerable("invalid_payload", message, namespace, ack, close_code=CLOSE_INVALID_DATA)
