"""The session report, rebuilt from `room_events` alone (PROTOCOL.md §3).

The room, its row and its chat are deleted when the session ends; the events
stay, so everything the report needs is recorded as an event while the
session runs: `session_started` (name, capsule, creator), presence
(`participant_joined` / `participant_left`), the quiz trio (`quiz_launched`,
`quiz_answered`, `quiz_closed`), `chat_message` (counted), `session_ended`.
`build()` is a pure function of the events, so it is tested without a daemon.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Sequence
from typing import Any

import attrs

from pratico_daemon.storage.protocols import RoomEvent


def _iso(ts: dt.datetime | None) -> str | None:
    return ts.isoformat(timespec="milliseconds") if ts is not None else None


@attrs.define
class _Presence:
    participant_id: str
    display_name: str
    role: str
    joined_at: dt.datetime
    left_at: dt.datetime | None = None
    since: dt.datetime | None = None  # start of the current presence interval
    seconds: float = 0.0

    def arrive(self, at: dt.datetime) -> None:
        if self.since is None:
            self.since = at

    def depart(self, at: dt.datetime) -> None:
        if self.since is not None:
            self.seconds += max(0.0, (at - self.since).total_seconds())
            self.since = None
        self.left_at = at


def event_json(event: RoomEvent) -> dict[str, Any]:
    return {"id": str(event.id), "ts": _iso(event.created_at), "room_id": event.room_id,
            "user_id": event.user_id, "type": event.type, "data": dict(event.data)}


def build(room_id: str, events: Sequence[RoomEvent]) -> dict[str, Any]:
    """The report of one session from its events in time order."""
    room: dict[str, Any] = {"id": room_id, "name": None, "capsule_id": None,
                            "created_by": None, "started_at": None, "ended_at": None}
    people: dict[str, _Presence] = {}
    quizzes: dict[str, dict[str, Any]] = {}
    chat_messages = 0
    timeline: list[dict[str, Any]] = []
    ended_at: dt.datetime | None = None
    for event in events:
        data = dict(event.data)
        at = event.created_at
        kind = event.type
        if kind == "session_started":
            room.update(name=data.get("name"), capsule_id=data.get("capsule_id"),
                        created_by=data.get("created_by", event.user_id),
                        started_at=_iso(at))
        elif kind == "room_renamed":
            room["name"] = data.get("name", room["name"])
        elif kind == "participant_joined":
            pid = str(data.get("participant_id"))
            person = people.get(pid)
            if person is None:
                person = people[pid] = _Presence(pid, str(data.get("display_name", "")),
                                                 str(data.get("role", "guest")), at)
            person.arrive(at)
        elif kind == "participant_left":
            person = people.get(str(data.get("participant_id")))
            if person is not None:
                person.depart(at)
        elif kind == "quiz_launched":
            quizzes[str(data.get("quiz_id"))] = {
                "quiz_id": data.get("quiz_id"), "launched_at": _iso(at), "closed_at": None,
                "questions": [{"question_id": q.get("id"), "text": q.get("text"),
                               "correct": q.get("correct"),
                               "counts": [0] * len(q.get("choices", []))}
                              for q in data.get("questions", [])],
                "answers": [], "scores": {}}
        elif kind == "quiz_answered":
            quiz = quizzes.get(str(data.get("quiz_id")))
            if quiz is not None:
                quiz["answers"].append({k: data.get(k) for k in (
                    "participant_id", "display_name", "question_id", "choice", "correct",
                    "response_time_ms")})
        elif kind == "quiz_closed":
            quiz = quizzes.get(str(data.get("quiz_id")))
            if quiz is not None:
                quiz["closed_at"] = _iso(at)
                quiz["scores"] = dict(data.get("scores", {}))
                results = {r.get("question_id"): r for r in data.get("results", [])}
                for q in quiz["questions"]:
                    if q["question_id"] in results:
                        q["counts"] = list(results[q["question_id"]].get("counts", q["counts"]))
        elif kind == "chat_message":
            chat_messages += 1
        elif kind == "session_ended":
            ended_at = at
        if kind != "chat_message":
            timeline.append({"ts": _iso(at), "type": kind, **_timeline_data(kind, data)})
    if ended_at is not None:
        room["ended_at"] = _iso(ended_at)
        for person in people.values():
            if person.since is not None:
                person.depart(ended_at)
    for quiz in quizzes.values():
        if not quiz["scores"]:  # still open (or closed event lost): count from answers
            scores: dict[str, int] = {}
            for a in quiz["answers"]:
                scores[a["participant_id"]] = scores.get(a["participant_id"], 0) + bool(
                    a["correct"])
            quiz["scores"] = scores
    participants = [{
        "participant_id": p.participant_id, "display_name": p.display_name, "role": p.role,
        "joined_at": _iso(p.joined_at),
        "left_at": _iso(p.left_at) if p.since is None else None,
        "seconds_present": round(p.seconds),
    } for p in people.values()]
    return {"room": room, "participants": participants, "quizzes": list(quizzes.values()),
            "chat_messages": chat_messages, "timeline": timeline}


def _timeline_data(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """What a timeline line says; quiz questions and answers have their own sections."""
    if kind == "quiz_launched":
        return {"quiz_id": data.get("quiz_id"), "questions": len(data.get("questions", []))}
    if kind == "quiz_closed":
        return {"quiz_id": data.get("quiz_id"), "by": data.get("by")}
    return {k: v for k, v in data.items() if k not in ("results", "totals", "params")}


CSV_COLUMNS = ("section", "participant_id", "display_name", "role", "joined_at", "left_at",
               "seconds_present", "quiz_id", "question_id", "choice", "correct",
               "response_time_ms", "points")


def _cell(value: Any) -> Any:
    """Participants choose their names: never let a spreadsheet read one as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_csv(report: dict[str, Any]) -> str:
    """One table: a row per participant, then a row per answer, then a row per quiz score."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore",
                            lineterminator="\r\n")
    writer.writeheader()
    for p in report["participants"]:
        writer.writerow({"section": "participant", **{k: _cell(v) for k, v in p.items()}})
    for quiz in report["quizzes"]:
        for answer in quiz["answers"]:
            writer.writerow({"section": "answer", "quiz_id": _cell(quiz["quiz_id"]),
                             **{k: _cell(v) for k, v in answer.items()}})
        for pid, points in quiz["scores"].items():
            writer.writerow({"section": "score", "quiz_id": _cell(quiz["quiz_id"]),
                             "participant_id": _cell(pid), "points": points})
    return out.getvalue()
