"""Lessons and seats as the classroom uses them, on top of the storage's `LessonRepo`.

The repositories (Postgres in production, SQLite embedded) answer one
question per call; the classroom needs a few combinations of them on every
`join_lesson` and on presence expiry. `LessonBook` composes those, issuing
independent calls together so they share the bridge's batches.

A lesson row is read by every join of its 30-odd members within seconds, so
the book keeps each lesson it read for `CACHE_TTL_S`: a class arriving together
costs one lesson read, not one per device. Staleness is bounded by that TTL
(a lesson ended by another backend is refused by joins at most that late),
and this node's own writes (start, end) drop the cached copy at once.

Ending is idempotent across daemons: each lesson is ended by the repository's
single conditional statement (`LessonRepo.end`, which also closes the
lesson's open quizzes and tasks), and only the call that ended it hears True.
"""

from __future__ import annotations

import attrs
import trio

from pratico_daemon.classroom.concurrency import together
from pratico_daemon.storage.repos import Attendance, Lesson, LessonRepo

# Long enough to serve a whole class arriving at once from one read, short
# enough that an external change (a lesson ended elsewhere) shows up promptly.
CACHE_TTL_S = 2.0
# Bounds the cache: far more lessons than a node has joins within CACHE_TTL_S.
CACHE_MAX = 10_000


@attrs.frozen
class SeatChange:
    attendance: Attendance
    previous_seat: int | None
    """The seat the student held before (to free it in the seat hash), if another."""


class LessonBook:
    def __init__(self, repo: LessonRepo) -> None:
        self.repo = repo
        self._cache: dict[str, tuple[float, Lesson]] = {}

    def __repr__(self) -> str:
        return f"<LessonBook {self.repo!r}>"

    async def get(self, lesson_id: str) -> Lesson | None:
        """The lesson, from the cache when it was read less than CACHE_TTL_S ago."""
        now = trio.current_time()
        cached = self._cache.get(lesson_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        lesson = await self.repo.get(lesson_id)
        if lesson is not None:
            if len(self._cache) >= CACHE_MAX:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            self._cache[lesson_id] = (now + CACHE_TTL_S, lesson)
        return lesson

    def forget(self, lesson_id: str) -> None:
        self._cache.pop(lesson_id, None)

    async def get_with_seat(self, lesson_id: str, student_id: str | None
                            ) -> tuple[Lesson | None, int | None]:
        """The lesson and the student's seat (None: no attendance row)."""
        if student_id is None:
            return await self.get(lesson_id), None
        lesson, seat = await together(lambda: self.get(lesson_id),
                                      lambda: self.repo.seat_of(lesson_id, student_id))
        return lesson, (seat if lesson is not None else None)

    async def start(self, lesson_id: str) -> bool:
        self.forget(lesson_id)
        return await self.repo.start(lesson_id)

    async def take_seat(self, lesson_id: str, student_id: str, seat: int,
                        display_name: str | None) -> SeatChange:
        """Seat (or move) a student and set its name; `Conflict` if the seat is taken.

        Callers hold the lesson's lock, so the previous seat read here is the
        one the upsert replaces.
        """
        previous = await self.repo.seat_of(lesson_id, student_id)
        attendance = await self.repo.set_attendance(lesson_id, student_id, seat, display_name)
        return SeatChange(attendance, previous if previous != seat else None)

    async def end_live_lessons(self, org_id: str, teacher_id: str) -> list[str]:
        """End the teacher's *live* lessons (not the scheduled ones); ids this call ended."""
        candidates = await self.repo.live_lessons_of(org_id, teacher_id)
        for lesson_id in candidates:
            self.forget(lesson_id)
        lessons = await together(*[lambda i=i: self.repo.get(i) for i in candidates])
        live = [lesson.id for lesson in lessons if lesson is not None and lesson.status == "live"]
        won = await together(*[lambda i=i: self.repo.end(i) for i in live])
        return [lesson_id for lesson_id, ended in zip(live, won, strict=True) if ended]
