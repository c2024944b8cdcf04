"""The plain-JSON WebSocket framing of PROTOCOL.md §1b.

One JSON object per text frame, fields at the top level:
`{"type": "offer", "ref": 7, "toUserId": "u2", "sdp": "…"}` on `/ws/conversation`
decodes to `Event("/conversation", "offer", {"toUserId": "u2", "sdp": "…"}, ack=7)`.
The namespace comes from the URL, not from the frame.

What is refused, and how (the choice PROTOCOL.md leaves to us):
- a frame that is not a JSON object (not JSON, an array, a number…) cannot say
  who to answer, so it closes the connection with 1007 — the same answer the
  Socket.IO framing gives to an unparseable frame (§1c). Answering a reply
  without `ref` was rejected: a client cannot match it to anything, and a
  client that sends non-JSON is broken, not unlucky;
- an object whose `ref` is usable but whose `type` is missing or not a string
  gets an ERROR reply with that `ref` (`invalid_payload`), and the connection
  lives on; without a usable `ref` it is closed with 1007;
- a frame over `max_bytes` gets an ERROR reply `message_too_large` when its
  `ref` can be read, otherwise a close 1009;
- a binary frame closes with 1003 `binary_not_supported`.
"""

from __future__ import annotations

from typing import Any

import orjson

from pratico_daemon.protocol.engineio import check_size
from pratico_daemon.protocol.errors import (
    CLOSE_INVALID_DATA,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_UNSUPPORTED_DATA,
    LocalProtocolError,
    RemoteProtocolError,
)
from pratico_daemon.protocol.event import Event, error

# PROTOCOL.md §1c / LimitsSection.max_message_bytes: 64 KiB covers an SDP offer.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
# Same bound as Socket.IO event names: identifiers like "media-state-changed".
DEFAULT_MAX_NAME_CHARS = 128
# A `ref` is a client's request id (a counter or a UUID); 128 characters is plenty.
MAX_REF_CHARS = 128
# Integer refs stay exact in JavaScript clients below 2**53.
MAX_REF_INT = 2**53 - 1


def encode_event(name: str, payload: dict[str, Any]) -> str:
    """A server event: `{"type": name, **payload}` (payload keys `type`/`ref` are overridden)."""
    return _dumps({**payload, "type": name} if "type" in payload else {"type": name, **payload})


def encode_event_frame(namespace: str, name: str, payload: dict[str, Any]) -> str:
    """`encode_event` with the signature of `rooms.broadcast.Encoder` (namespace is in the URL)."""
    return encode_event(name, payload)


def encode_event_frame_bytes(namespace: str, name: str, payload: dict[str, Any]) -> bytes:
    """`encode_event_frame` as UTF-8 bytes, for transports that send bytes (no re-encoding)."""
    message = {**payload, "type": name} if "type" in payload else {"type": name, **payload}
    try:
        return orjson.dumps(message)
    except TypeError as exc:
        raise LocalProtocolError("internal", f"payload is not JSON: {exc}") from None


def encode_reply(ref: int | str, reply: dict[str, Any]) -> str:
    """`{"type":"reply","ref":…,"status":…,"data":…}` from a `success()`/`error()` object."""
    return _dumps({"type": "reply", "ref": ref, "status": reply["status"], "data": reply["data"]})


def encode_error_reply(ref: int | str, code: str, message: str = "", **data: Any) -> str:
    """Shorthand for `encode_reply(ref, error(code, message, **data))`."""
    return encode_reply(ref, error(code, message, **data))


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise LocalProtocolError("internal", f"payload is not JSON: {exc}") from None


def _valid_ref(ref: Any) -> bool:
    if type(ref) is int:
        return -MAX_REF_INT <= ref <= MAX_REF_INT
    return type(ref) is str and 0 < len(ref) <= MAX_REF_CHARS


def _refused(
    code: str, message: str, namespace: str, ref: int | str | None, close_code: int
) -> RemoteProtocolError:
    reply = None if ref is None else encode_error_reply(ref, code, message)
    return RemoteProtocolError(
        code, message, close_code=close_code, ack=ref, namespace=namespace, reply=reply
    )


def decode_frame(
    frame: str | bytes,
    namespace: str,
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_name_chars: int = DEFAULT_MAX_NAME_CHARS,
) -> Event:
    """Decode one WebSocket frame received on `/ws/<namespace>` into an `Event`."""
    if not isinstance(frame, str):
        raise RemoteProtocolError(
            "binary_not_supported",
            "binary frames are not supported",
            close_code=CLOSE_UNSUPPORTED_DATA,
            namespace=namespace,
        )
    try:
        check_size(frame, max_bytes)
    except RemoteProtocolError as exc:
        # Read the ref anyway (a big SDP is a legitimate mistake worth an answer).
        ref = _peek_ref(frame, max_bytes)
        raise _refused(exc.code, exc.message, namespace, ref, CLOSE_MESSAGE_TOO_BIG) from None
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError:
        raise _refused(
            "invalid_payload", "not valid JSON", namespace, None, CLOSE_INVALID_DATA
        ) from None
    if not isinstance(obj, dict):
        raise _refused(
            "invalid_payload", "a frame is one JSON object", namespace, None, CLOSE_INVALID_DATA
        )
    ref = obj.pop("ref", None)
    if ref is not None and not _valid_ref(ref):
        raise _refused(
            "invalid_payload",
            "ref must be an integer or a short string",
            namespace,
            None,
            CLOSE_INVALID_DATA,
        )
    name = obj.pop("type", None)
    if not isinstance(name, str) or not name or len(name) > max_name_chars:
        raise _refused(
            "invalid_payload", "type must be a short string", namespace, ref, CLOSE_INVALID_DATA
        )
    return Event(namespace, name, obj, ref)


def _peek_ref(frame: str, max_bytes: int) -> int | str | None:
    """The `ref` of an oversized frame, if it parses.

    Parsing is bounded: past 32 times the limit (2 MiB for 64 KiB) the frame is
    not read at all, so an absurd frame cannot buy much CPU.
    """
    if len(frame) > 32 * max_bytes:
        return None
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict):
        ref = obj.get("ref")
        if ref is not None and _valid_ref(ref):
            return ref
    return None
