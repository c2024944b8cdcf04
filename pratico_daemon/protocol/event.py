"""The one event model both framings decode to (PROTOCOL.md §1).

A Socket.IO `42/classroom,17["join_lesson",{...}]` and a JSON frame
`{"type":"join_lesson","ref":17,...}` on `/ws/classroom` both become
`Event("/classroom", "join_lesson", {...}, ack=17)`; handlers never learn which
framing carried it. Replies are built with `success`/`error` so that both
framings answer with the same object (§1c).
"""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class Event:
    """A client or server event: `payload` is always a JSON object.

    `ack` is the Socket.IO ack id (an int) or the JSON framing's `ref` (an int
    or a string); `None` means nobody waits for a reply.
    """

    namespace: str
    name: str
    payload: dict[str, Any] = attrs.field(factory=dict)
    ack: int | str | None = None


def success(data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The SUCCESS reply object of PROTOCOL.md §1c: `{"status":"SUCCESS","data":{…}}`."""
    return {"status": "SUCCESS", "data": {} if data is None else data}


def error(code: str, message: str = "", **data: Any) -> dict[str, Any]:
    """The ERROR reply object of PROTOCOL.md §1c: `{"status":"ERROR","data":{"code","message",…}}`.

    `code` is one of the stable codes of `pratico_daemon.errors.HTTP_STATUS`;
    extra keyword data (e.g. `retry_after`) sits next to code and message.
    """
    return {
        "status": "ERROR",
        "data": {"code": code, "message": message or code.replace("_", " "), **data},
    }
