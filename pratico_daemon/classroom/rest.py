"""REST for lessons (PROTOCOL.md §2): create, read, and seat a student.

Lessons usually come from another backend; these endpoints let the daemon be
used on its own and let tests set up lessons. Scope: an admin acts on its own
org's lessons, a teacher on its own lessons (creating one names itself as the
teacher); everyone else is `forbidden`. Bad input is a 400 naming the field,
never a 5xx: bounds are checked here before the database sees them.
"""

from __future__ import annotations

from typing import Any

from quart import Response

from pratico_daemon import logs
from pratico_daemon.auth import Claims
from pratico_daemon.classroom import keys
from pratico_daemon.classroom.checks import checked_fields
from pratico_daemon.classroom.lessons import LessonBook
from pratico_daemon.errors import AppError
from pratico_daemon.http.api import ERROR_SCHEMA, json_body, json_response
from pratico_daemon.http.app import api, bearer_claims, services
from pratico_daemon.session.validate import ID, Field, optional
from pratico_daemon.storage.protocols import Conflict, InvalidData, StorageUnavailable, new_event_id
from pratico_daemon.storage.repos import Lesson, NotFound

log = logs.get("classroom.rest")

# A classroom has at most a few dozen seats; 1,000 bounds the seat hash that a
# join creates in Redis (one field per seat).
MAX_SEATS = 1000
TITLE = Field((str,), max_len=500)
SEATS = Field((int,), min_value=0, max_value=MAX_SEATS)
DISPLAY_NAME = Field((str,), max_len=100)

_ID_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 200}
LESSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "org_id", "teacher_id", "title", "seat_count", "status",
                 "started_at", "ended_at"],
    "properties": {
        "id": {"type": "string"}, "org_id": {"type": "string"},
        "teacher_id": {"type": "string"}, "title": {"type": "string"},
        "seat_count": {"type": "integer"},
        "status": {"type": "string", "enum": ["scheduled", "live", "ended"]},
        "started_at": {"type": "string", "nullable": True},
        "ended_at": {"type": "string", "nullable": True},
    },
}
ATTENDANCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["lesson_id", "student_id", "seat", "display_name"],
    "properties": {"lesson_id": {"type": "string"}, "student_id": {"type": "string"},
                   "seat": {"type": "integer"}, "display_name": {"type": "string"}},
}
_ERRORS = {400: ERROR_SCHEMA, 401: ERROR_SCHEMA, 403: ERROR_SCHEMA, 503: ERROR_SCHEMA}


def _book() -> LessonBook:
    return LessonBook(services().stores.repos.lessons)


def _may_act_on(claims: Claims, org_id: str, teacher_id: str) -> None:
    if claims.role == "admin" and claims.org_id == org_id:
        return
    if claims.role == "teacher" and claims.org_id == org_id and claims.sub == teacher_id:
        return
    raise AppError("forbidden", "an org's admin or the lesson's own teacher only")


def _path_id(name: str, value: str) -> str:
    (checked,) = checked_fields({name: value}, **{name: ID})
    return checked  # type: ignore[no-any-return]


async def _storage(call: Any) -> Any:
    try:
        return await call
    except StorageUnavailable as exc:
        raise AppError("unavailable", f"storage unavailable: {exc}") from None
    except InvalidData as exc:
        raise AppError("invalid_payload", str(exc)) from None


async def _lesson_for(claims: Claims, lesson_id: str) -> Lesson:
    lesson = await _storage(_book().get(_path_id("lesson_id", lesson_id)))
    if lesson is None:
        raise AppError("not_found", f"no lesson {lesson_id!r}")
    _may_act_on(claims, lesson.org_id, lesson.teacher_id)
    return lesson  # type: ignore[no-any-return]


@api.route("/lessons", "POST", summary="Create a lesson (admin of the org, or its teacher)",
           request={"type": "object", "required": ["org_id", "teacher_id"],
                    "properties": {"id": _ID_SCHEMA, "org_id": _ID_SCHEMA,
                                   "teacher_id": _ID_SCHEMA,
                                   "title": {"type": "string", "maxLength": 500},
                                   "seat_count": {"type": "integer", "minimum": 0,
                                                  "maximum": MAX_SEATS}}},
           responses={201: LESSON_SCHEMA, 409: ERROR_SCHEMA, **_ERRORS})
async def create_lesson() -> Response:
    claims = bearer_claims()
    body = await json_body()
    lesson_id, org_id, teacher_id, title, seat_count = checked_fields(
        body, id=optional(ID), org_id=ID, teacher_id=ID, title=optional(TITLE, ""),
        seat_count=optional(SEATS, 0))
    _may_act_on(claims, org_id, teacher_id)
    lesson = Lesson(id=lesson_id or str(new_event_id()), org_id=org_id, teacher_id=teacher_id,
                    title=title, seat_count=seat_count)
    try:
        created = await _storage(_book().repo.create(lesson))
    except Conflict:
        raise AppError("conflict", f"lesson {lesson.id!r} exists") from None
    return json_response(created.to_json(), 201)


@api.route("/lessons/<lesson_id>", "GET", summary="A lesson (its org's admin or its teacher)",
           responses={200: LESSON_SCHEMA, 404: ERROR_SCHEMA, **_ERRORS})
async def get_lesson(lesson_id: str) -> Response:
    lesson = await _lesson_for(bearer_claims(), lesson_id)
    return json_response(lesson.to_json())


@api.route("/lessons/<lesson_id>/attendance/<student_id>", "PUT",
           summary="Seat a student (its org's admin or the lesson's teacher)",
           request={"type": "object", "required": ["seat"],
                    "properties": {"seat": {"type": "integer", "minimum": 1},
                                   "display_name": {"type": "string", "maxLength": 100}}},
           responses={200: ATTENDANCE_SCHEMA, 404: ERROR_SCHEMA, 409: ERROR_SCHEMA, **_ERRORS})
async def put_attendance(lesson_id: str, student_id: str) -> Response:
    claims = bearer_claims()
    student_id = _path_id("student_id", student_id)
    lesson = await _lesson_for(claims, lesson_id)
    body = await json_body()
    seat, display_name = checked_fields(body, seat=Field((int,), min_value=1),
                                display_name=optional(DISPLAY_NAME))
    if seat > lesson.seat_count:
        raise AppError("invalid_payload", f"seat: the lesson has {lesson.seat_count} seats")
    try:
        change = await _storage(_book().take_seat(lesson.id, student_id, seat, display_name))
    except Conflict:
        raise AppError("conflict", f"seat {seat} is another student's") from None
    except NotFound:
        raise AppError("not_found", f"no lesson {lesson.id!r}") from None
    await _mirror_seat(lesson.id, student_id, seat, change.previous_seat)
    a = change.attendance
    return json_response({"lesson_id": a.lesson_id, "student_id": a.student_id, "seat": a.seat,
                          "display_name": a.display_name})


async def _mirror_seat(lesson_id: str, student_id: str, seat: int, previous: int | None) -> None:
    """Keep `lesson_seat_{lesson_id}` in step once a join created it (best effort)."""
    presence = services().stores.presence
    key = keys.lesson_seat(lesson_id)
    try:
        if await presence.exists(key):
            update = {str(seat): student_id}
            if previous is not None:
                update[str(previous)] = ""
            await presence.hset(key, update)
    except StorageUnavailable as exc:
        # Postgres holds the seat; the hash catches up at the student's next join.
        log.warning("seat hash of %s not updated: %s", lesson_id, exc)
