"""REST of Pratico rooms (PROTOCOL.md §3): launch, rename, read, resolve, end, events, report.

Who may do what: launching needs a teacher or admin token; everything about
one room is for its trainer (its creator) and the admins of its org. After
the room is gone, `session_started` (the first of its `room_events`) still
says who that was, so events and report stay readable and still protected.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from quart import Response, request

from pratico_daemon.auth import Claims
from pratico_daemon.errors import AppError
from pratico_daemon.http.api import ERROR_SCHEMA, json_response
from pratico_daemon.http.app import api, bearer_claims, services
from pratico_daemon.pratico import report as reports
from pratico_daemon.pratico.live import KIND, PraticoNamespace
from pratico_daemon.pratico.registry import namespace_for
from pratico_daemon.pratico.state import PraticoState, iso
from pratico_daemon.storage.protocols import RoomEvent, StorageError

_ID = {"type": "string", "maxLength": 200}
_LINK_PROPERTIES: dict[str, Any] = {"id": {"type": "string"}, "name": {"type": "string"},
                                    "link": {"type": "string"}}
ROOM_LINK = {"type": "object", "required": ["id", "name", "link"],
             "properties": _LINK_PROPERTIES}
ROOM_INFO = {"type": "object", "required": ["id", "name", "link", "capsule_id", "created_by"],
             "properties": {**_LINK_PROPERTIES, "title": {"type": "string"},
                            "capsule_id": {"type": "string"}, "created_by": {"type": "string"},
                            "org_id": {"type": "string"}, "created_at": {"type": "string"},
                            "params": {"type": "object"},
                            "participants": {"type": "integer"},
                            "connected": {"type": "integer"},
                            "quiz_open": {"type": "boolean"}}}
CREATE_BODY = {
    "type": "object", "required": ["capsule_id", "title", "capsule_snapshot"],
    "properties": {"capsule_id": {"type": "string", "minLength": 1, "maxLength": 200},
                   "title": {"type": "string", "maxLength": 500},
                   "capsule_snapshot": {"type": "object"},
                   "params": {"type": "object"}},
}
RENAME_BODY = {"type": "object", "required": ["name"],
               "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 500}}}
EVENT = {"type": "object", "required": ["id", "ts", "type", "data"],
         "properties": {"id": {"type": "string"}, "ts": {"type": "string"},
                        "room_id": {"type": "string"}, "user_id": {"type": ["string", "null"]},
                        "type": {"type": "string"}, "data": {"type": "object"}}}
EVENTS_PAGE = {"type": "object", "required": ["items", "next"],
               "properties": {"items": {"type": "array", "items": EVENT},
                              "next": {"type": ["string", "null"]}}}
REPORT = {"type": "object",
          "required": ["room", "participants", "quizzes", "chat_messages", "timeline"],
          "properties": {"room": {"type": "object"}, "participants": {"type": "array"},
                         "quizzes": {"type": "array"}, "chat_messages": {"type": "integer"},
                         "timeline": {"type": "array"}}}
ENDED = {"type": "object", "required": ["room_id", "ended"],
         "properties": {"room_id": {"type": "string"}, "ended": {"type": "boolean"}}}


def _errors(*statuses: int) -> dict[int, dict[str, Any]]:
    return {status: ERROR_SCHEMA for status in statuses}


def _namespace() -> PraticoNamespace:
    ns = namespace_for(services())
    if ns is None:
        raise AppError("unavailable", "pratico rooms are not running on this daemon")
    return ns


def _room_uuid(room_id: str) -> str:
    try:
        return str(uuid.UUID(room_id))
    except ValueError:
        raise AppError("not_found", "no such room") from None


def _may_lead(claims: Claims, created_by: str | None, org_id: str | None) -> bool:
    if created_by is not None and claims.sub == created_by:
        return True
    return claims.role == "admin" and bool(org_id) and claims.org_id == org_id


def _live_state(ns: PraticoNamespace, room_id: str) -> PraticoState:
    room = ns.services.rooms.get(room_id) if ns.services.rooms is not None else None
    if room is None or room.kind != KIND:
        raise AppError("not_found", "room not found or ended")
    state: PraticoState = room.state
    return state


def _lead_live(ns: PraticoNamespace, room_id: str) -> PraticoState:
    claims = bearer_claims()
    state = _live_state(ns, room_id)
    if not _may_lead(claims, state.created_by, state.org_id):
        raise AppError("forbidden", "only the room's trainer or an admin of its org")
    return state


async def _read(ns: PraticoNamespace, room_id: str, after: uuid.UUID | None,
                limit: int) -> list[RoomEvent]:
    try:
        return await ns.services.stores.events.read(room_id, after=after, limit=limit)
    except StorageError as exc:
        raise AppError("unavailable", f"events unavailable: {exc}") from None


async def _lead_history(ns: PraticoNamespace, room_id: str) -> None:
    """The caller may read this room's events (live or ended), else an AppError."""
    claims = bearer_claims()
    first = await _read(ns, room_id, None, 1)
    if not first or first[0].type != "session_started":
        raise AppError("not_found", "no such room")
    data = first[0].data
    if not _may_lead(claims, data.get("created_by", first[0].user_id), data.get("org_id")):
        raise AppError("forbidden", "only the room's trainer or an admin of its org")


@api.route("/rooms", "POST", summary="Launch a live room from a capsule",
           request=CREATE_BODY,
           responses={201: ROOM_LINK, **_errors(400, 401, 403, 409, 413, 503)})
async def create_room() -> Response:
    svc = services()
    limit = svc.config.limits.max_snapshot_bytes
    if request.content_length is not None and request.content_length > limit:
        raise AppError("payload_too_large", f"body over {limit} bytes")
    claims = bearer_claims()
    if claims.role not in ("teacher", "admin"):
        raise AppError("forbidden", "only trainers launch rooms")
    raw = await request.get_data(as_text=False)
    if len(raw) > limit:
        raise AppError("payload_too_large", f"body over {limit} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise AppError("invalid_payload", "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise AppError("invalid_payload", "body must be a JSON object")
    capsule_id, title = body.get("capsule_id"), body.get("title")
    snapshot, params = body.get("capsule_snapshot"), body.get("params", {})
    if not isinstance(capsule_id, str) or not 1 <= len(capsule_id) <= 200:
        raise AppError("invalid_payload", "capsule_id: a string of 1 to 200 characters")
    if not isinstance(title, str) or len(title) > 500:
        raise AppError("invalid_payload", "title: a string of at most 500 characters")
    if "\x00" in capsule_id or "\x00" in title:
        raise AppError("invalid_payload", "capsule_id/title: NUL character")
    if not isinstance(snapshot, dict):
        raise AppError("invalid_payload", "capsule_snapshot: expected object")
    if not isinstance(params, dict):
        raise AppError("invalid_payload", "params: expected object")
    ns = _namespace()
    state = await ns.create_room(claims=claims, capsule_id=capsule_id, title=title,
                                 capsule_snapshot=snapshot, params=params)
    return json_response({"id": state.room_id, "name": state.name,
                          "link": ns.link(state.name)}, 201)


@api.route("/rooms/<room_id>", "PATCH", summary="Rename a live room (its link)",
           request=RENAME_BODY, responses={200: ROOM_LINK, **_errors(400, 401, 403, 404, 409,
                                                                    503)})
async def rename_room(room_id: str) -> Response:
    ns = _namespace()
    room_id = _room_uuid(room_id)
    _lead_live(ns, room_id)
    raw = await request.get_data(as_text=False)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise AppError("invalid_payload", "body is not valid JSON") from None
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not 1 <= len(name) <= 500:
        raise AppError("invalid_payload", "name: a string of 1 to 500 characters")
    new_name = await ns.rename(room_id, name)
    return json_response({"id": room_id, "name": new_name, "link": ns.link(new_name)})


@api.route("/rooms/<room_id>", "GET", summary="A live room",
           responses={200: ROOM_INFO, **_errors(401, 403, 404, 503)})
async def get_room(room_id: str) -> Response:
    ns = _namespace()
    state = _lead_live(ns, _room_uuid(room_id))
    return json_response({
        "id": state.room_id, "name": state.name, "link": ns.link(state.name),
        "title": state.title, "capsule_id": state.capsule_id, "created_by": state.created_by,
        "org_id": state.org_id, "created_at": iso(state.created_at),
        "params": state.params_view(), "participants": len(state.participants),
        "connected": sum(1 for p in state.participants.values() if p.connected),
        "quiz_open": state.quiz is not None and state.quiz.open})


@api.route("/r/<name>", "GET", summary="Resolve a shareable link", security=False,
           responses={200: ROOM_LINK, **_errors(404, 503)})
async def resolve_link(name: str) -> Response:
    ns = _namespace()
    room_id = ns.names.get(name)
    if room_id is None:
        repos = getattr(ns.services.stores, "repos", None)
        record = None
        if repos is not None and len(name) <= 200:
            try:
                record = await repos.rooms.get_by_name(name)
            except StorageError as exc:
                raise AppError("unavailable", f"directory unavailable: {exc}") from None
        if record is None:
            raise AppError("not_found", f"no live room named {name!r}")
        room_id, name = str(record.id), record.name
    return json_response({"id": room_id, "name": name, "link": ns.link(name)})


@api.route("/rooms/<room_id>/end", "POST", summary="End a live session",
           responses={200: ENDED, **_errors(401, 403, 404, 503)})
async def end_room(room_id: str) -> Response:
    ns = _namespace()
    room_id = _room_uuid(room_id)
    _lead_live(ns, room_id)
    if not await ns.end_room(room_id, bearer_claims().sub, "trainer"):
        raise AppError("not_found", "room not found or ended")
    return json_response({"room_id": room_id, "ended": True})


@api.route("/rooms/<room_id>/events", "GET", summary="A room's events, in time order, paged",
           query={"limit": {"type": "integer", "minimum": 1, "maximum": 1000},
                  "after": {"type": "string"}},
           responses={200: EVENTS_PAGE, **_errors(400, 401, 403, 404, 503)})
async def room_events(room_id: str) -> Response:
    ns = _namespace()
    room_id = _room_uuid(room_id)
    await _lead_history(ns, room_id)
    raw_limit = request.args.get("limit", "100")
    try:
        limit = int(raw_limit)
    except ValueError:
        raise AppError("invalid_payload", "limit: an integer from 1 to 1000") from None
    if not 1 <= limit <= 1000:
        raise AppError("invalid_payload", "limit: an integer from 1 to 1000")
    after: uuid.UUID | None = None
    if request.args.get("after"):
        try:
            after = uuid.UUID(request.args["after"])
        except ValueError:
            raise AppError("invalid_payload", "after: an event id") from None
    items = await _read(ns, room_id, after, limit)
    next_ = str(items[-1].id) if len(items) == limit else None
    return json_response({"items": [reports.event_json(e) for e in items], "next": next_})


@api.route("/rooms/<room_id>/report", "GET",
           summary="The session report (JSON, or CSV with ?format=csv), also after the end",
           query={"format": {"type": "string"}},
           responses={200: REPORT, **_errors(400, 401, 403, 404, 503)})
async def room_report(room_id: str) -> Response:
    ns = _namespace()
    room_id = _room_uuid(room_id)
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "csv"):
        raise AppError("invalid_payload", "format: json or csv")
    await _lead_history(ns, room_id)
    events: list[RoomEvent] = []
    after: uuid.UUID | None = None
    while True:
        page = await _read(ns, room_id, after, 1000)
        events.extend(page)
        if len(page) < 1000:
            break
        after = page[-1].id
    report = reports.build(room_id, events)
    if fmt == "csv":
        return Response(reports.to_csv(report), content_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition":
                                 f'attachment; filename="report-{room_id}.csv"'})
    return json_response(report)


CAPSULE = {"type": "object", "required": ["capsule_id", "capsule_snapshot"],
           "properties": {"capsule_id": {"type": "string"}, "capsule_snapshot": {}}}


@api.route("/rooms/<room_id>/capsule", "GET",
           summary="The room's capsule document (for its participants: guest token or JWT)",
           responses={200: CAPSULE, **_errors(401, 403, 404, 503)})
async def room_capsule(room_id: str) -> Response:
    """Up to 10 MiB: served over HTTP rather than through a connection's bounded outbox."""
    ns = _namespace()
    state = _live_state(ns, _room_uuid(room_id))
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AppError("unauthorized", "missing bearer token (access or guest token)")
    allowed = False
    try:
        guest = ns.tokens.verify(token.strip())
    except AppError:
        claims = bearer_claims()  # not a guest token: must be a valid access token
        allowed = (_may_lead(claims, state.created_by, state.org_id)
                   or f"u_{claims.sub}" in state.participants)
    else:
        allowed = guest.room_id == state.room_id and guest.participant_id in state.participants
    if not allowed:
        raise AppError("forbidden", "not a participant of this room")
    return json_response({"capsule_id": state.capsule_id,
                          "capsule_snapshot": state.capsule_snapshot})
