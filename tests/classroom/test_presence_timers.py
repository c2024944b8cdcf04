"""Grace, expiry and cooldown: on mock time in-process, and once on real Redis time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from pratico_daemon.errors import AppError
from pratico_daemon.storage.protocols import RESYNC
from tests.classroom.conftest import classroom_config
from tests.classroom.harness import Classroom, open_classroom, open_peer_node

ALIVE = "alive:org_org1_user_t1"


async def _live_lesson_with_items(bed: Classroom) -> Any:
    await bed.lesson("L1", seats=2)
    await bed.repo.add_quiz("L1", "q1")
    await bed.repo.add_task("L1", "k1")
    teacher = await bed.teacher("t1")
    ack = await bed.emit(teacher, "join_lesson",
                         {"user_id": "t1", "lesson_id": "L1", "role": "teacher"})
    assert ack["status"] == "SUCCESS"
    return teacher


async def _wait_handled(bed: Classroom, count: int = 1) -> None:
    while bed.ns.expired_handled < count:  # noqa: ASYNC110 - mock time: this jumps
        await trio.sleep(1)


async def test_grace_expiry_ends_lesson_and_tells_managers(
        timed_bed: Classroom, timer_clock: MockClock) -> None:
    bed = timed_bed
    manager = await bed.manager()
    teacher = await _live_lesson_with_items(bed)
    student = await bed.student("s1")
    await bed.emit(student, "join_lesson", {"user_id": "s1", "lesson_id": "L1",
                                            "role": "student"})
    await bed.drop(teacher)
    start = trio.current_time()
    await trio.sleep(299)
    assert (await bed.repo.get("L1")).status == "live"
    assert manager.events("logout") == []
    await _wait_handled(bed)
    assert 300 <= trio.current_time() - start < 302
    lesson = await bed.repo.get("L1")
    assert lesson.status == "ended"
    assert lesson.ended_at is not None
    assert await bed.repo.open_items("L1") == (0, 0)
    assert manager.events("logout") == [{"user_id": "t1"}]
    assert student.events("lesson_ended") == [{"lesson_id": "L1"}]
    assert bed.services.rooms.get("classroom:lesson:L1") is None
    types = [e.type for e in await bed.events_of("L1")]
    assert types[-1] == "lesson_ended"
    assert [e.type for e in await bed.events_of("org:org1")] == [
        "teacher_connect", "teacher_expired"]


async def test_reconnect_within_grace_keeps_the_lesson(
        timed_bed: Classroom, timer_clock: MockClock) -> None:
    bed = timed_bed
    manager = await bed.manager()
    teacher = await _live_lesson_with_items(bed)
    await bed.drop(teacher)
    await trio.sleep(200)
    back = await bed.teacher("t1")
    assert await bed.presence.ttl(ALIVE) is None
    await trio.sleep(1000)
    assert bed.ns.expired_handled == 0
    assert (await bed.repo.get("L1")).status == "live"
    assert await bed.repo.open_items("L1") == (1, 1)
    assert manager.events("logout") == []
    assert back.data["teacher_live"]


async def test_cooldown_refuses_then_lets_in(
        timed_bed: Classroom, timer_clock: MockClock) -> None:
    bed = timed_bed
    manager = await bed.manager()
    await bed.teacher("t1")
    ack = await bed.emit(manager, "force_logout", {"user_id": "t1", "org_id": "org1"})
    assert ack["status"] == "SUCCESS"
    await trio.sleep(120)
    with pytest.raises(AppError) as refused:
        await bed.teacher("t1")
    assert refused.value.code == "cooldown"
    assert refused.value.data["retry_after"] == 180
    await trio.sleep(181)
    teacher = await bed.teacher("t1")
    assert (await bed.presence.hgetall(ALIVE))["state"] == "connect"
    assert teacher.data["teacher_live"]


async def test_resync_finds_expiries_whose_notification_was_lost(
        timed_bed: Classroom, timer_clock: MockClock) -> None:
    bed = timed_bed
    manager = await bed.manager()
    teacher = await _live_lesson_with_items(bed)
    await bed.drop(teacher)
    # The key vanishes without a notification (as if it was dropped on overflow) …
    await bed.presence.delete(ALIVE)
    await trio.sleep(1)
    assert bed.ns.expired_handled == 0
    # … and the feed says "you may have missed some": the namespace rescans.
    bed.services.stores.feed.resync()
    await _wait_handled(bed)
    assert (await bed.repo.get("L1")).status == "ended"
    assert manager.events("logout") == [{"user_id": "t1"}]


async def test_other_keys_and_the_marker_are_harmless(
        timed_bed: Classroom, timer_clock: MockClock) -> None:
    bed = timed_bed
    await bed.ns.on_expired("lesson_seat_L1")
    await bed.ns.on_expired("alive:garbage")
    await bed.ns.on_expired(RESYNC)
    assert bed.ns.expired_handled == 0


async def test_two_daemons_end_a_lesson_once(bed: Classroom) -> None:
    manager = await bed.manager()
    teacher = await _live_lesson_with_items(bed)
    async with open_peer_node(bed) as peer:
        peer_manager = await peer.manager("m2")
        await bed.drop(teacher)
        await bed.presence.delete(ALIVE)  # as if it expired; both nodes hear it
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bed.ns.on_expired, ALIVE)
            nursery.start_soon(peer.ns.on_expired, ALIVE)
        logouts = manager.events("logout") + peer_manager.events("logout")
        assert logouts == [{"user_id": "t1"}]
    assert (await bed.repo.get("L1")).status == "ended"
    assert [e.type for e in await bed.events_of("L1")].count("lesson_ended") == 1


async def test_real_redis_expiry_ends_the_lesson(tmp_path: Path, redis_prefix: str,
                                                 raw_redis: Any, pg_dsn: str) -> None:
    """Keyspace notifications on a 1.5 s grace, real time, real Redis and Postgres."""
    config = classroom_config(tmp_path / "state", redis_prefix,
                              presence={"disconnect_grace_s": 1.5})
    async with open_classroom("production", config, tmp_path, pg_dsn=pg_dsn) as bed:
        manager = await bed.manager()
        teacher = await _live_lesson_with_items(bed)
        await bed.drop(teacher)
        pttl = await raw_redis("PTTL", f"{redis_prefix}{ALIVE}")
        assert 1000 < pttl <= 1500
        assert await raw_redis("HGET", f"{redis_prefix}{ALIVE}", "state") == b"disconnect"
        with trio.fail_after(10):
            while bed.ns.expired_handled < 1:  # noqa: ASYNC110 - Redis decides when
                await trio.sleep(0.05)
        assert (await bed.repo.get("L1")).status == "ended"
        assert await bed.repo.open_items("L1") == (0, 0)
        assert manager.events("logout") == [{"user_id": "t1"}]
