"""Catch a restored room up with the durable events written after its checkpoint.

A checkpoint lags the room by up to `redis.checkpoint_interval_s`, but every
change that matters is also a `room_events` row, and the acknowledged ones
(quiz answers) are there *before* their ack. The snapshot remembers the last
event its state includes (`state.last_event`); restore reads what came after
and applies it here. Applying is idempotent — an event whose effect is
already in the state changes nothing — because "after" is decided by time and
two events of the same millisecond may be read again.

Chat text is not in `room_events` (it is deleted with the room); the restored
history is reloaded from `chat_messages` instead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from pratico_daemon.errors import AppError
from pratico_daemon.pratico.state import GUEST, Answer, Participant, PraticoState, Question
from pratico_daemon.storage.protocols import RoomEvent


def apply_events(state: PraticoState, events: Iterable[RoomEvent]) -> tuple[int, bool]:
    """Apply `events` (time order); returns (how many changed the state, session ended)."""
    changed = 0
    for event in events:
        if str(event.id) == state.last_event:
            continue
        result = _apply(state, event.type, dict(event.data), event.created_at.timestamp())
        if result == "ended":
            return changed, True
        if result:
            changed += 1
            state.last_event = str(event.id)
    if changed:
        state.touch()
    return changed, False


def _apply(state: PraticoState, kind: str, data: dict[str, Any], at: float) -> bool | str:
    if kind == "session_ended":
        return "ended"
    if kind == "participant_joined":
        pid = str(data.get("participant_id"))
        if pid in state.participants or pid in state.revoked:
            return False
        role = str(data.get("role") or GUEST)
        user_id = pid[2:] if pid.startswith("u_") else None
        state.participants[pid] = Participant(pid, str(data.get("display_name", "")), role,
                                              user_id=user_id, joined_at=at)
        return True
    if kind == "participant_left" and data.get("reason") == "kicked":
        pid = str(data.get("participant_id"))
        if pid in state.revoked:
            return False
        state.revoked.add(pid)
        state.participants.pop(pid, None)
        return True
    if kind == "page_changed":
        state.page = data.get("page")
        return True
    if kind == "activity_changed":
        state.activity = data.get("activity")
        return True
    if kind == "params_changed":
        state.navigation_mode = str(data.get("navigation_mode", state.navigation_mode))
        collaboration = data.get("collaboration")
        if isinstance(collaboration, dict):
            state.collaboration = collaboration
        return True
    if kind == "capsule_changed":
        state.capsule_id = str(data.get("capsule_id", state.capsule_id))
        return True
    if kind == "quiz_launched":
        return _launch(state, data, at)
    if kind == "quiz_answered":
        return _answer(state, data, at)
    if kind == "quiz_closed":
        quiz = state.quiz
        if quiz is None or not quiz.open or quiz.quiz_id != data.get("quiz_id"):
            return False
        state.close_quiz(at)
        return True
    return False


def _launch(state: PraticoState, data: dict[str, Any], at: float) -> bool:
    quiz_id = str(data.get("quiz_id"))
    if quiz_id in state.used_quiz_ids:
        return False
    try:
        questions = [Question(str(q["id"]), str(q.get("text", "")), list(q["choices"]),
                              int(q["correct"])) for q in data.get("questions", [])]
    except (KeyError, TypeError, ValueError):
        return False
    deadline_text = data.get("deadline")
    deadline = (dt.datetime.fromisoformat(deadline_text).timestamp()
                if isinstance(deadline_text, str) else None)
    if state.quiz is not None and state.quiz.open:
        state.close_quiz(at)  # cannot happen live (one open at a time); stay consistent
    state.launch_quiz(quiz_id, questions, at, None)
    assert state.quiz is not None
    state.quiz.deadline = deadline
    return True


def _answer(state: PraticoState, data: dict[str, Any], at: float) -> bool:
    quiz = state.quiz
    if quiz is None or quiz.quiz_id != data.get("quiz_id"):
        return False
    pid, qid = str(data.get("participant_id")), str(data.get("question_id"))
    if qid in quiz.answers.get(pid, {}):
        return False
    try:
        question = quiz.question(qid)
    except AppError:
        return False
    choice = data.get("choice")
    if not isinstance(choice, int) or not 0 <= choice < len(question.choices):
        return False
    if pid not in state.participants and pid not in state.revoked:
        state.participants[pid] = Participant(pid, str(data.get("display_name", "")), GUEST,
                                              joined_at=at)
    answer = Answer(choice, choice == question.correct, at)
    quiz.answers.setdefault(pid, {})[qid] = answer
    if not quiz.open and answer.correct:  # answered just before a close we already applied
        state.scores[pid] = state.scores.get(pid, 0) + 1
    return True
