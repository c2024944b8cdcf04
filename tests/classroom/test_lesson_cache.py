"""The lesson cache's single flight: concurrent misses share one load, even after a failure."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from pratico_daemon.classroom.lessons import LessonBook
from tests.classroom.harness import Classroom


class FirstLoadHangs:
    """The real (embedded) lesson repository, whose first `attendance` read never
    returns until cancelled: what `together()` does to a sibling when the
    lesson read beside it fails."""

    def __init__(self, repo: Any) -> None:
        self.repo = repo
        self.reads = 0
        self.first_started = trio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.repo, name)

    async def attendance(self, lesson_id: str) -> Any:
        self.reads += 1
        if self.reads == 1:
            self.first_started.set()
            await trio.sleep_forever()
        return await self.repo.attendance(lesson_id)


async def test_waiters_of_a_cancelled_load_retry_as_one_load(ebed: Classroom) -> None:
    await ebed.lesson("L1")
    repo = FirstLoadHangs(ebed.repo)
    book = LessonBook(repo)
    results: list[dict[str, int]] = []

    async def waiter() -> None:
        results.append(await book.seating("L1"))

    async with trio.open_nursery() as nursery:
        first = trio.CancelScope()

        async def first_loader() -> None:
            with first:
                await book.seating("L1")

        nursery.start_soon(first_loader)
        await repo.first_started.wait()
        for _ in range(5):
            nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        first.cancel()
    # Before the fix every waiter loaded at once and all but one died on a KeyError.
    assert results == [{}] * 5
    assert repo.reads == 2  # the cancelled load, then one retry shared by all five


class CountingRepo:
    """The real (embedded) lesson repository, counting reads; reads wait for `go`."""

    def __init__(self, repo: Any) -> None:
        self.repo = repo
        self.reads = {"get": 0, "attendance": 0}
        self.go = trio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.repo, name)

    async def get(self, lesson_id: str) -> Any:
        self.reads["get"] += 1
        await self.go.wait()
        return await self.repo.get(lesson_id)

    async def attendance(self, lesson_id: str) -> Any:
        self.reads["attendance"] += 1
        await self.go.wait()
        return await self.repo.attendance(lesson_id)


async def test_a_class_arriving_together_reads_the_lesson_once(ebed: Classroom) -> None:
    await ebed.lesson("L1", seats=3)
    await ebed.repo.set_attendance("L1", "s2", 2, None)
    repo = CountingRepo(ebed.repo)
    book = LessonBook(repo)
    answers: dict[str, Any] = {}

    async def join(student: str) -> None:
        lesson, seat = await book.get_with_seat("L1", student)
        answers[student] = (lesson.id if lesson else None, seat)

    async with trio.open_nursery() as nursery:
        for student in ("s1", "s2", "s3", "s2"):
            nursery.start_soon(join, student)
        await trio.testing.wait_all_tasks_blocked()
        repo.go.set()
    assert repo.reads == {"get": 1, "attendance": 1}
    assert answers == {"s1": ("L1", None), "s2": ("L1", 2), "s3": ("L1", None)}
