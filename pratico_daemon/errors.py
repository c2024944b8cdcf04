"""Stable error codes shared by acks, close reasons and HTTP answers (PROTOCOL.md §1c).

Clients switch on these strings, so they never change once published; docs/
reference/errors.md lists them. `AppError` is raised by handlers and turned into
`{"status": "ERROR", "data": {"code", "message", ...}}` or an HTTP answer.
"""

from __future__ import annotations

from typing import Any

# code -> HTTP status used when the same error is answered over REST.
HTTP_STATUS: dict[str, int] = {
    "unauthorized": 401,
    "forbidden": 403,
    "invalid_payload": 400,
    "unknown_event": 400,
    "rate_limited": 429,
    "message_too_large": 413,
    "payload_too_large": 413,
    "not_found": 404,
    "conflict": 409,
    "room_full": 409,
    "cooldown": 429,
    "lesson_not_found": 404,
    "lesson_ended": 409,
    "quiz_closed": 409,
    "not_started": 409,
    "session_ended": 409,
    "unavailable": 503,
    "binary_not_supported": 400,
    "internal": 500,
}


class AppError(Exception):
    """An error a client caused or must be told about, with a stable `code`."""

    def __init__(self, code: str, message: str = "", **data: Any) -> None:
        assert code in HTTP_STATUS, code
        super().__init__(message or code)
        self.code = code
        self.message = message or code.replace("_", " ")
        self.data = data

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def ack_data(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.data}

    def http_body(self) -> dict[str, Any]:
        return {"error": self.ack_data()}
