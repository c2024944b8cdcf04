"""Fixtures of the classroom tests: the bed on both store flavours."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.classroom.harness import Classroom, open_classroom
from tests.conftest import RunningDaemon, make_config, start_daemon
from tests.support.redis import REDIS_URL


def classroom_config(state_dir: Path, prefix: str | None = None, **sections: Any) -> Any:
    if prefix is not None:
        sections["redis"] = {"url": REDIS_URL, "key_prefix": prefix}
    return make_config(state_dir, **sections)


@pytest.fixture(params=["embedded", "production"])
async def bed(request: pytest.FixtureRequest, tmp_path: Path, redis_prefix: str,
              raw_redis: Any, pg_dsn: str) -> AsyncIterator[Classroom]:
    """The classroom on embedded stores, then on Redis + Postgres (a fresh database)."""
    if request.param == "embedded":
        config = classroom_config(tmp_path / "state")
        async with open_classroom("embedded", config, tmp_path) as classroom:
            yield classroom
    else:
        config = classroom_config(tmp_path / "state", redis_prefix)
        async with open_classroom("production", config, tmp_path, pg_dsn=pg_dsn) as classroom:
            classroom.raw = raw_redis  # type: ignore[attr-defined]
            yield classroom


@pytest.fixture
def timer_clock() -> trio.testing.MockClock:
    """Mock time that jumps when everything is idle for 50 ms of real time.

    Plain `autojump_clock` would jump while a SQLite call waits in a worker
    thread, expiring keys mid-step (STACK-NOTES.md); 50 ms of true idleness
    only happens when the test is really waiting on a timer.
    """
    return trio.testing.MockClock(autojump_threshold=0.25)


@pytest.fixture
async def timed_bed(timer_clock: trio.testing.MockClock, tmp_path: Path
                    ) -> AsyncIterator[Classroom]:
    """Embedded classroom (grace and cooldown 300 s, the defaults).

    Tests using it also take `timer_clock`: pytest-trio runs a test on the
    clock found among the test function's own arguments.
    """
    config = classroom_config(tmp_path / "state")
    async with open_classroom("embedded", config, tmp_path) as classroom:
        yield classroom


@pytest.fixture
async def ebed(tmp_path: Path) -> AsyncIterator[Classroom]:
    """Embedded classroom on real time: for many small table-driven cases."""
    config = classroom_config(tmp_path / "state")
    async with open_classroom("embedded", config, tmp_path) as classroom:
        yield classroom


@pytest.fixture(params=["embedded", "production"])
async def running(request: pytest.FixtureRequest, nursery: trio.Nursery, tmp_path: Path,
                  redis_prefix: str, raw_redis: Any, pg_dsn: str) -> RunningDaemon:
    """The whole daemon on port 0, embedded then on Redis + Postgres (`.mode` says which)."""
    if request.param == "embedded":
        config = make_config(tmp_path / "state")
    else:
        config = make_config(tmp_path / "state", redis={"url": REDIS_URL,
                                                        "key_prefix": redis_prefix},
                             postgres={"dsn": pg_dsn})
    daemon = await start_daemon(nursery, config)
    daemon.mode = request.param  # type: ignore[attr-defined]
    daemon.redis_prefix = redis_prefix  # type: ignore[attr-defined]
    yield daemon
    daemon.daemon.request_shutdown()




@pytest.fixture
async def pbed(tmp_path: Path, redis_prefix: str, raw_redis: Any, pg_dsn: str
               ) -> AsyncIterator[Classroom]:
    """The classroom on Redis + Postgres only."""
    config = classroom_config(tmp_path / "state", redis_prefix)
    async with open_classroom("production", config, tmp_path, pg_dsn=pg_dsn) as classroom:
        yield classroom
