"""REST of PROTOCOL.md §4: time slots, registration, joining, media state, sessions.

Each endpoint is declared once on the shared `api` (OpenAPI comes from these
declarations). Handlers validate, call the `ConversationService` (which does
the database work and tells the session's room), and answer; errors are
AppErrors with the stable codes of §1c.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Response, request

from pratico_daemon.conversation.service import ConversationService
from pratico_daemon.conversation.slots import parse_time
from pratico_daemon.errors import AppError
from pratico_daemon.http.api import ERROR_SCHEMA, json_body, json_response
from pratico_daemon.http.app import api, bearer_claims, require_admin, services
from pratico_daemon.storage.protocols import Conflict, InvalidData, StorageUnavailable

MAX_PAGE = 100
DEFAULT_PAGE = 50

_NULLABLE_STR = {"type": "string", "nullable": True}
SLOT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "targetLanguageCode", "level", "startTime", "durationMinutes",
                 "minParticipants", "maxParticipants", "registeredCount", "placesLeft",
                 "registered"],
    "properties": {
        "id": {"type": "string"}, "seriesId": _NULLABLE_STR,
        "targetLanguageCode": {"type": "string"}, "level": {"type": "string"},
        "startTime": {"type": "string", "format": "date-time"},
        "durationMinutes": {"type": "integer"}, "minParticipants": {"type": "integer"},
        "maxParticipants": {"type": "integer"}, "timezone": {"type": "string"},
        "recurrence": _NULLABLE_STR, "registeredCount": {"type": "integer"},
        "placesLeft": {"type": "integer"}, "registered": {"type": "boolean"},
    },
}
SLOT_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["targetLanguageCode", "level", "startTime", "durationMinutes",
                 "minParticipants", "maxParticipants"],
    "properties": {
        "targetLanguageCode": {"type": "string"}, "level": {"type": "string"},
        "startTime": {"type": "string", "format": "date-time"},
        "durationMinutes": {"type": "integer", "minimum": 1},
        "minParticipants": {"type": "integer", "minimum": 2},
        "maxParticipants": {"type": "integer", "minimum": 2},
        "recurrence": {"type": "string", "description": "RFC 5545 RRULE (DAILY or coarser)"},
        "timezone": {"type": "string", "description": "IANA zone, default UTC"},
    },
}
SERIES_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["seriesId", "slots"],
    "properties": {"seriesId": {"type": "string"},
                   "slots": {"type": "array", "items": SLOT_SCHEMA}},
}
PARTICIPANT_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["userId", "cameraEnabled", "micEnabled"],
    "properties": {"userId": {"type": "string"}, "cameraEnabled": {"type": "boolean"},
                   "micEnabled": {"type": "boolean"}},
}
STATUS_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["status"], "properties": {"status": {"type": "string"}},
}
JOIN_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["sessionId", "status", "participants", "iceServers"],
    "properties": {
        "sessionId": {"type": "string"},
        "status": {"type": "string", "enum": ["waiting", "active", "ended"]},
        "participants": {"type": "array", "items": PARTICIPANT_SCHEMA},
        "iceServers": {"type": "array", "items": {"type": "object"}},
    },
}
SESSION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["sessionId", "timeSlotId", "status", "participants", "recordingEnabled"],
    "properties": {
        "sessionId": {"type": "string"}, "timeSlotId": {"type": "string"},
        "status": {"type": "string", "enum": ["waiting", "active", "ended"]},
        "endReason": _NULLABLE_STR, "startedAt": _NULLABLE_STR, "endedAt": _NULLABLE_STR,
        "participants": {"type": "array", "items": PARTICIPANT_SCHEMA},
        "recordingEnabled": {"type": "boolean"}, "recordingUrl": _NULLABLE_STR,
    },
}
MEDIA_REQUEST: dict[str, Any] = {
    "type": "object",
    "properties": {"cameraEnabled": {"type": "boolean"}, "micEnabled": {"type": "boolean"},
                   "recordingConsent": {"type": "boolean"}},
}
MEDIA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["userId", "cameraEnabled", "micEnabled", "recordingConsent", "sessionId"],
    "properties": {**PARTICIPANT_SCHEMA["properties"], "recordingConsent": {"type": "boolean"},
                   "sessionId": {"type": "string"}},
}


def storage_errors(handler: Callable[..., Awaitable[Response]]
                   ) -> Callable[..., Awaitable[Response]]:
    """Storage errors as the stable codes: a down store is 503, refused data is 400."""

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(*args, **kwargs)
        except StorageUnavailable:
            raise AppError("unavailable", "the conversation store is unavailable") from None
        except InvalidData as exc:
            raise AppError("invalid_payload", f"refused by the store: {exc}") from None
        except Conflict:
            raise AppError("conflict", "a concurrent change won; try again") from None

    return wrapper


def _errors(*statuses: int) -> dict[int, dict[str, Any]]:
    return {status: ERROR_SCHEMA for status in (400, 401, 503, *statuses)}


def _service() -> ConversationService:
    from pratico_daemon.conversation import service_for

    found = service_for(services())
    if found is None:
        raise AppError("unavailable", "conversation sessions are not running on this node")
    return found


def _optional_bool(body: dict[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise AppError("invalid_payload", f"{name}: expected a boolean")
    return value


def _cursor(value: str | None) -> tuple[dt.datetime, str] | None:
    if not value:
        return None
    try:
        start, _, slot_id = base64.urlsafe_b64decode(value.encode() + b"==").decode().partition("|")
        import uuid

        return dt.datetime.fromisoformat(start), str(uuid.UUID(slot_id))
    except (ValueError, UnicodeError):
        raise AppError("invalid_payload", "cursor: not a cursor this server gave") from None


def _make_cursor(item: dict[str, Any]) -> str:
    start = dt.datetime.fromisoformat(item["startTime"].replace("Z", "+00:00"))
    raw = f"{start.isoformat()}|{item['id']}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@api.route("/timeslots", "POST", summary="Create a time slot or a recurring series (admin)",
           request=SLOT_REQUEST,
           responses={201: {"oneOf": [SLOT_SCHEMA, SERIES_SCHEMA]}, **_errors(403)})
@storage_errors
async def create_timeslot() -> Response:
    claims = require_admin()
    body = await json_body()
    return json_response(await _service().create_slots(body, claims.sub), 201)


@api.route("/timeslots", "GET", summary="Upcoming slots with places left",
           query={"language": {"type": "string"}, "level": {"type": "string"},
                  "from": {"type": "string", "format": "date-time"},
                  "to": {"type": "string", "format": "date-time"},
                  "limit": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                  "cursor": {"type": "string"}},
           responses={200: {"type": "object", "required": ["items"],
                            "properties": {"items": {"type": "array", "items": SLOT_SCHEMA},
                                           "next": _NULLABLE_STR}}, **_errors()})
@storage_errors
async def list_timeslots() -> Response:
    claims = bearer_claims()
    service = _service()
    args = request.args
    start = parse_time(args["from"], "from") if args.get("from") else service.clock.now()
    end = parse_time(args["to"], "to") if args.get("to") else None
    try:
        limit = int(args.get("limit", DEFAULT_PAGE))
    except ValueError:
        raise AppError("invalid_payload", "limit: expected an integer") from None
    if not 1 <= limit <= MAX_PAGE:
        raise AppError("invalid_payload", f"limit: must be between 1 and {MAX_PAGE}")
    language = args.get("language") or None
    level = args.get("level") or None
    for name, value in (("language", language), ("level", level)):
        if value is not None and len(value) > 32:
            raise AppError("invalid_payload", f"{name}: too long")
    repo = service._repo()
    items = await repo.list_slots(language=language, level=level, start=start, end=end,
                                  user_id=claims.sub, limit=limit + 1,
                                  after=_cursor(args.get("cursor")))
    more = len(items) > limit
    items = items[:limit]
    return json_response({"items": items,
                          "next": _make_cursor(items[-1]) if more and items else None})


@api.route("/timeslots/<slot_id>/register", "POST", summary="Register for a slot (idempotent)",
           responses={200: STATUS_SCHEMA, **_errors(404, 409)})
@storage_errors
async def register(slot_id: str) -> Response:
    claims = bearer_claims()
    return json_response(await _service().register(claims.sub, slot_id))


@api.route("/timeslots/<slot_id>/register", "DELETE",
           summary="Cancel a registration (idempotent); leaves the slot's live session",
           responses={200: STATUS_SCHEMA, **_errors(404)})
@storage_errors
async def cancel(slot_id: str) -> Response:
    claims = bearer_claims()
    return json_response(await _service().cancel(claims.sub, slot_id))


@api.route("/sessions/join", "POST", summary="Join the session of a slot you registered for",
           request={"type": "object", "required": ["timeSlotId"],
                    "properties": {"timeSlotId": {"type": "string"},
                                   "recordingConsent": {"type": "boolean"}}},
           responses={200: JOIN_SCHEMA, **_errors(403, 404, 409)})
@storage_errors
async def join() -> Response:
    claims = bearer_claims()
    body = await json_body(("timeSlotId",))
    slot_id = body["timeSlotId"]
    if not isinstance(slot_id, str):
        raise AppError("invalid_payload", "timeSlotId: expected a string")
    consent = _optional_bool(body, "recordingConsent") or False
    return json_response(await _service().join(claims.sub, slot_id, consent))


@api.route("/sessions/current/media", "PATCH", summary="Your camera/mic state in your live session",
           request=MEDIA_REQUEST, responses={200: MEDIA_SCHEMA, **_errors(404)})
@storage_errors
async def media() -> Response:
    claims = bearer_claims()
    body = await json_body()
    camera = _optional_bool(body, "cameraEnabled")
    mic = _optional_bool(body, "micEnabled")
    consent = _optional_bool(body, "recordingConsent")
    return json_response(await _service().set_media(claims.sub, camera, mic, consent))


@api.route("/sessions/<session_id>/leave", "POST", summary="Leave a live session",
           responses={200: STATUS_SCHEMA, **_errors(404)})
@storage_errors
async def leave(session_id: str) -> Response:
    claims = bearer_claims()
    return json_response(await _service().leave(claims.sub, session_id))


@api.route("/sessions/<session_id>", "GET", summary="A session (participants and admins)",
           responses={200: SESSION_SCHEMA, **_errors(403, 404)})
@storage_errors
async def get_session(session_id: str) -> Response:
    claims = bearer_claims()
    return json_response(await _service().session_view(claims.sub, claims.role, session_id))

