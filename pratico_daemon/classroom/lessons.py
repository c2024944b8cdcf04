"""Lessons and seats as the classroom uses them, on top of the storage's `LessonRepo`.

The repositories (Postgres in production, SQLite embedded) answer one
question per call; the classroom needs a few combinations of them on every
`join_lesson` and on presence expiry. `LessonBook` composes those.

A lesson row and its seating are read by every join of its 30-odd members
within seconds, so the book keeps each lesson and each lesson's seating it
read for `CACHE_TTL_S`, and concurrent misses share one read: a class arriving
together costs two reads, not two per device. Staleness is bounded by that TTL
(a lesson ended by another backend is refused by joins at most that late),
and this node's own writes (start, end) drop the cached copy at once.

Ending is idempotent across daemons: each lesson is ended by the repository's
single conditional statement (`LessonRepo.end`, which also closes the
lesson's open quizzes and tasks), and only the call that ended it hears True.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

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
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}
        self._loading: dict[tuple[str, str], trio.Event] = {}

    def __repr__(self) -> str:
        return f"<LessonBook {self.repo!r}>"

    async def _cached(self, key: tuple[str, str], load: Callable[[], Awaitable[Any]]) -> Any:
        """`load()`'s value, kept CACHE_TTL_S; concurrent misses wait for one load."""
        while True:
            now = trio.current_time()
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
            pending = self._loading.get(key)
            if pending is None:
                break
            # After the wait, look again: the value, or another waiter's retry
            # (the load failed, was cancelled or found nothing). Breaking out
            # here instead let every waiter load at once, and the second to
            # finish found its entry gone (a KeyError under 2,000 joins).
            await pending.wait()
        done = self._loading[key] = trio.Event()
        try:
            value = await load()
            if value is not None:
                if len(self._cache) >= CACHE_MAX:
                    self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                self._cache[key] = (trio.current_time() + CACHE_TTL_S, value)
            return value
        finally:
            if self._loading.get(key) is done:
                del self._loading[key]
            done.set()

    async def get(self, lesson_id: str) -> Lesson | None:
        """The lesson, read at most once per CACHE_TTL_S."""
        lesson: Lesson | None = await self._cached(("lesson", lesson_id),
                                                   lambda: self.repo.get(lesson_id))
        return lesson

    async def seating(self, lesson_id: str) -> dict[str, int]:
        """student id → seat of a lesson, read at most once per CACHE_TTL_S."""
        async def load() -> dict[str, int]:
            return {a.student_id: a.seat for a in await self.repo.attendance(lesson_id)}

        seating: dict[str, int] = await self._cached(("seating", lesson_id), load)
        return seating

    def forget(self, lesson_id: str) -> None:
        """Drop what is cached of a lesson (this node just changed it)."""
        self._cache.pop(("lesson", lesson_id), None)
        self._cache.pop(("seating", lesson_id), None)

    async def get_with_seat(self, lesson_id: str, student_id: str | None
                            ) -> tuple[Lesson | None, int | None]:
        """The lesson and the student's seat (None: no attendance row).

        One read after the other: from the cache (every join of a class but the
        first) neither yields, and joins that arrive while the first one loads
        wait for its loads without a task each.
        """
        lesson = await self.get(lesson_id)
        if lesson is None or student_id is None:
            return lesson, None
        return lesson, (await self.seating(lesson_id)).get(student_id)

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
        self.forget(lesson_id)
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
