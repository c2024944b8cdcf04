"""A Pratico room's state: what a room *is* right now (seed 000's "photograph").

Plain data plus the rules that change it. Nothing here awaits, broadcasts or
writes: `live.py` calls these methods from inside the room's own loop (the
only writer), then broadcasts and records the events they describe. Keeping
the rules here makes them testable without a room, and `snapshot()` /
`from_snapshot()` are the checkpoint format (JSON-able dicts, schema 1).

The capsule snapshot (a tldraw document of up to 10 MiB) is *not* part of
the checkpoint: it lives in the `rooms` row and is reloaded from there on
restore, so a checkpoint written every 100 ms stays a few kilobytes.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from typing import Any

import attrs

from pratico_daemon.errors import AppError

TRAINER = "trainer"
GUEST = "guest"
NAVIGATION_MODES = ("trainer", "free")
CHECKPOINT_KIND = "pratico"


def iso(ts: float) -> str:
    """ISO 8601 UTC with milliseconds, as every timestamp the clients see."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


@attrs.define
class Participant:
    participant_id: str
    display_name: str
    role: str  # TRAINER or GUEST
    user_id: str | None = None
    joined_at: float = 0.0
    own_page: Any = None  # this participant's view in `free` mode
    # Runtime only: the connections (sids) through which it is present now.
    sids: set[str] = attrs.field(factory=set, eq=False)

    @property
    def connected(self) -> bool:
        return bool(self.sids)

    def public(self) -> dict[str, Any]:
        return {"participant_id": self.participant_id, "display_name": self.display_name,
                "role": self.role, "connected": self.connected}

    def snapshot(self) -> dict[str, Any]:
        return {"participant_id": self.participant_id, "display_name": self.display_name,
                "role": self.role, "user_id": self.user_id, "joined_at": self.joined_at,
                "own_page": self.own_page}


@attrs.define
class Question:
    id: str
    text: str
    choices: list[str]
    correct: int

    def public(self, with_correct: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "text": self.text, "choices": self.choices}
        if with_correct:
            out["correct"] = self.correct
        return out


@attrs.define
class Answer:
    choice: int
    correct: bool
    at: float


@attrs.define
class Quiz:
    quiz_id: str
    questions: list[Question]
    launched_at: float
    deadline: float | None
    open: bool = True
    closed_at: float | None = None
    # participant_id -> question_id -> Answer
    answers: dict[str, dict[str, Answer]] = attrs.field(factory=dict)

    def question(self, question_id: str) -> Question:
        for q in self.questions:
            if q.id == question_id:
                return q
        raise AppError("not_found", f"no question {question_id!r} in quiz {self.quiz_id!r}")

    def results(self) -> list[dict[str, Any]]:
        out = []
        for q in self.questions:
            counts = [0] * len(q.choices)
            for per_question in self.answers.values():
                answer = per_question.get(q.id)
                if answer is not None:
                    counts[answer.choice] += 1
            out.append({"question_id": q.id, "correct": q.correct, "counts": counts})
        return out

    def points(self) -> dict[str, int]:
        """This quiz's points per participant who answered: one per correct answer."""
        return {pid: sum(1 for a in per_q.values() if a.correct)
                for pid, per_q in self.answers.items()}

    def public(self, with_correct: bool) -> dict[str, Any]:
        """The quiz as a client sees it; `correct` only for the trainer or once closed."""
        show = with_correct or not self.open
        out: dict[str, Any] = {
            "quiz_id": self.quiz_id,
            "questions": [q.public(show) for q in self.questions],
            "open": self.open,
            "deadline": iso(self.deadline) if self.deadline is not None else None,
        }
        if not self.open:
            out["results"] = self.results()
            out["scores"] = self.points()
        return out

    def snapshot(self) -> dict[str, Any]:
        return {
            "quiz_id": self.quiz_id,
            "questions": [attrs.asdict(q) for q in self.questions],
            "launched_at": self.launched_at, "deadline": self.deadline, "open": self.open,
            "closed_at": self.closed_at,
            "answers": {pid: {qid: attrs.asdict(a) for qid, a in per_q.items()}
                        for pid, per_q in self.answers.items()},
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> Quiz:
        return cls(
            quiz_id=data["quiz_id"],
            questions=[Question(**q) for q in data["questions"]],
            launched_at=data["launched_at"], deadline=data["deadline"], open=data["open"],
            closed_at=data.get("closed_at"),
            answers={pid: {qid: Answer(**a) for qid, a in per_q.items()}
                     for pid, per_q in data.get("answers", {}).items()},
        )


@attrs.define
class PraticoState:
    room_id: str
    name: str
    title: str
    capsule_id: str
    created_by: str
    org_id: str
    created_at: float
    params: dict[str, Any] = attrs.field(factory=dict)
    navigation_mode: str = "trainer"
    collaboration: dict[str, Any] = attrs.field(factory=dict)
    page: Any = None
    activity: Any = None
    participants: dict[str, Participant] = attrs.field(factory=dict)
    revoked: set[str] = attrs.field(factory=set)
    used_quiz_ids: set[str] = attrs.field(factory=set)
    quiz: Quiz | None = None
    scores: dict[str, int] = attrs.field(factory=dict)
    chat: deque[dict[str, Any]] = attrs.field(factory=lambda: deque(maxlen=50))
    version: int = 0
    last_event: str | None = None  # id of the newest room event this state includes
    # Runtime only (not checkpointed): the capsule document, reloaded from `rooms`.
    capsule_snapshot: Any = attrs.field(default=None, eq=False, repr=False)

    # -- views ------------------------------------------------------------------------

    def view(self, participant_id: str | None, link: str) -> dict[str, Any]:
        """The whole state as `participant_id` may see it (PROTOCOL.md §3 `state`)."""
        me = self.participants.get(participant_id or "")
        trainer = me is not None and me.role == TRAINER
        out: dict[str, Any] = {
            "room": {"id": self.room_id, "name": self.name, "title": self.title, "link": link},
            "capsule_id": self.capsule_id,
            "page": self.page,
            "activity": self.activity,
            "navigation_mode": self.navigation_mode,
            "collaboration": self.collaboration,
            "params": self.params_view(),
            "participants": [p.public() for p in self.participants.values()],
            "quiz": self.quiz.public(trainer) if self.quiz is not None else None,
            "scores": dict(self.scores),
            "chat": list(self.chat),
        }
        if me is not None and self.navigation_mode == "free" and me.role != TRAINER:
            out["own_page"] = me.own_page
        return out

    def params_view(self) -> dict[str, Any]:
        return {**self.params, "navigation_mode": self.navigation_mode,
                "collaboration": self.collaboration}

    def touch(self) -> None:
        self.version += 1

    # -- quiz rules -------------------------------------------------------------------

    def launch_quiz(self, quiz_id: str, questions: list[Question], now: float,
                    time_limit_s: float | None) -> Quiz:
        if self.quiz is not None and self.quiz.open:
            raise AppError("conflict", f"quiz {self.quiz.quiz_id!r} is still open")
        if quiz_id in self.used_quiz_ids:
            raise AppError("conflict", f"quiz_id {quiz_id!r} was already used in this session")
        deadline = now + time_limit_s if time_limit_s is not None else None
        self.quiz = Quiz(quiz_id, questions, launched_at=now, deadline=deadline)
        self.used_quiz_ids.add(quiz_id)
        self.touch()
        return self.quiz

    def open_quiz(self, quiz_id: str) -> Quiz:
        """The quiz `quiz_id` if it is the current one and still open."""
        quiz = self.quiz
        if quiz is None or quiz.quiz_id != quiz_id:
            if quiz_id in self.used_quiz_ids:
                raise AppError("quiz_closed", f"quiz {quiz_id!r} is closed")
            raise AppError("not_found", f"no quiz {quiz_id!r}")
        if not quiz.open:
            raise AppError("quiz_closed", f"quiz {quiz_id!r} is closed")
        return quiz

    def answer(self, participant_id: str, quiz_id: str, question_id: str, choice: int,
               now: float) -> tuple[Quiz, Question, Answer]:
        quiz = self.open_quiz(quiz_id)
        if quiz.deadline is not None and now >= quiz.deadline:
            raise AppError("quiz_closed", f"quiz {quiz_id!r} is past its deadline")
        question = quiz.question(question_id)
        if not 0 <= choice < len(question.choices):
            raise AppError("invalid_payload",
                           f"choice: must be 0..{len(question.choices) - 1}")
        per_question = quiz.answers.setdefault(participant_id, {})
        if question_id in per_question:
            raise AppError("conflict", f"question {question_id!r} was already answered")
        answer = per_question[question_id] = Answer(choice, choice == question.correct, now)
        self.touch()
        return quiz, question, answer

    def undo_answer(self, participant_id: str, quiz_id: str, question_id: str) -> None:
        """Forget an answer that could not be made durable (it was never acknowledged)."""
        quiz = self.quiz
        if quiz is None or quiz.quiz_id != quiz_id:
            return
        answer = quiz.answers.get(participant_id, {}).pop(question_id, None)
        if not quiz.answers.get(participant_id, True):
            del quiz.answers[participant_id]
        if answer is not None and answer.correct and not quiz.open:
            self.scores[participant_id] = self.scores.get(participant_id, 0) - 1
        self.touch()

    def close_quiz(self, now: float) -> Quiz:
        """Close the open quiz and add its points to the session's scores."""
        quiz = self.quiz
        assert quiz is not None
        assert quiz.open
        quiz.open = False
        quiz.closed_at = now
        for pid, points in quiz.points().items():
            self.scores[pid] = self.scores.get(pid, 0) + points
        self.touch()
        return quiz

    # -- checkpoint -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "room_id": self.room_id, "name": self.name, "title": self.title,
            "capsule_id": self.capsule_id, "created_by": self.created_by,
            "org_id": self.org_id, "created_at": self.created_at, "params": self.params,
            "navigation_mode": self.navigation_mode, "collaboration": self.collaboration,
            "page": self.page, "activity": self.activity,
            "participants": [p.snapshot() for p in self.participants.values()],
            "revoked": sorted(self.revoked), "used_quiz_ids": sorted(self.used_quiz_ids),
            "quiz": self.quiz.snapshot() if self.quiz is not None else None,
            "scores": self.scores, "chat": list(self.chat), "chat_max": self.chat.maxlen,
            "version": self.version, "last_event": self.last_event,
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> PraticoState:
        state = cls(
            room_id=data["room_id"], name=data["name"], title=data.get("title", ""),
            capsule_id=data["capsule_id"], created_by=data["created_by"],
            org_id=data.get("org_id", ""), created_at=data["created_at"],
            params=data.get("params", {}), navigation_mode=data.get("navigation_mode", "trainer"),
            collaboration=data.get("collaboration", {}), page=data.get("page"),
            activity=data.get("activity"),
            participants={p["participant_id"]: Participant(**p)
                          for p in data.get("participants", [])},
            revoked=set(data.get("revoked", [])), used_quiz_ids=set(data.get("used_quiz_ids", [])),
            quiz=Quiz.from_snapshot(data["quiz"]) if data.get("quiz") else None,
            scores=dict(data.get("scores", {})),
            chat=deque(data.get("chat", []), maxlen=data.get("chat_max") or 50),
            version=data.get("version", 0), last_event=data.get("last_event"),
        )
        return state
