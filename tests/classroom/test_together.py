"""`together`: concurrent calls, results in order, the first real error re-raised alone."""

from __future__ import annotations

import pytest
import trio

from pratico_daemon.classroom.concurrency import together


async def test_results_come_back_in_call_order_and_calls_overlap() -> None:
    started: list[str] = []

    async def slow(name: str, delay: float) -> str:
        started.append(name)
        await trio.sleep(delay)
        return name

    with trio.fail_after(1):
        results = await together(lambda: slow("a", 0.2), lambda: slow("b", 0.1),
                                 lambda: slow("c", 0.2))
    assert results == ["a", "b", "c"]
    assert sorted(started) == ["a", "b", "c"]
    assert await together() == []


@pytest.mark.parametrize("failing", [0, 1])  # a spawned call, and the one run inline
async def test_the_error_is_raised_alone_and_the_other_call_is_cancelled(failing: int) -> None:
    finished: list[int] = []

    async def call(i: int) -> int:
        if i == failing:
            await trio.sleep(0.01)
            raise LookupError(f"call {i} failed")
        await trio.sleep(10)
        finished.append(i)
        return i

    with trio.fail_after(1), pytest.raises(LookupError, match=f"call {failing} failed"):
        await together(lambda: call(0), lambda: call(1))
    assert finished == []


async def test_cancellation_from_outside_stays_a_cancellation() -> None:
    with trio.move_on_after(0.05) as scope:
        await together(trio.sleep_forever, trio.sleep_forever)
    assert scope.cancelled_caught
