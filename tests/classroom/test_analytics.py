"""The analytics sink: batches for connect/reconnect/disconnect; drops (and counts) when down."""

from __future__ import annotations

from pathlib import Path

import trio

from pratico_daemon.classroom.analytics import AnalyticsSink
from pratico_daemon.config import AnalyticsSection
from tests.classroom.conftest import classroom_config
from tests.classroom.harness import open_classroom
from tests.classroom.receiver import Receiver


async def test_presence_changes_reach_the_endpoint_in_batches(nursery: trio.Nursery,
                                                              tmp_path: Path) -> None:
    receiver = await nursery.start(Receiver().run)
    config = classroom_config(tmp_path / "state", analytics={
        "endpoint": receiver.url, "token": "mp-token", "batch_size": 3,
        "flush_interval_s": 0.2})
    async with open_classroom("embedded", config, tmp_path) as bed:
        teacher = await bed.teacher("t1")
        await bed.drop(teacher)
        await bed.teacher("t1")
        with trio.fail_after(10):
            while bed.ns.analytics.statistics().sent < 3:  # noqa: ASYNC110 - a thread posts
                await trio.sleep(0.01)
        stats = bed.ns.analytics.statistics()
    events = receiver.events()
    assert [e["event"] for e in events] == ["connect", "disconnect", "reconnect"]
    for event in events:
        props = event["properties"]
        assert props["token"] == "mp-token"
        assert props["distinct_id"] == "t1"
        assert props["role"] == "teacher"
        assert props["org_id"] == "org1"
        assert isinstance(props["time"], int)
        assert len(props["$insert_id"]) == 32
    assert receiver.batches[0] == events  # one batch of three
    assert receiver.content_types == ["application/json"]
    assert stats.sent == 3
    assert stats.dropped == 0


async def test_a_dead_endpoint_drops_and_counts_never_blocks(nursery: trio.Nursery) -> None:
    receiver = await nursery.start(Receiver().run)
    receiver.hang = True
    sink = AnalyticsSink(AnalyticsSection(endpoint=receiver.url, token="t", batch_size=2,
                                          queue_size=5, flush_interval_s=0.05))
    await nursery.start(sink.run)
    with trio.fail_after(1):  # track() never waits, whatever the endpoint does
        for i in range(2):
            sink.track("connect", f"u{i}", {})
        await trio.sleep(0.2)  # the sender took both and is stuck on the hung POST
        for i in range(20):
            sink.track("connect", f"v{i}", {})
    stats = sink.statistics()
    assert stats.queued == 5
    assert stats.dropped == 15
    assert stats.sent == 0


def test_off_by_default_tracks_nothing() -> None:
    sink = AnalyticsSink(AnalyticsSection())
    assert not sink.enabled
    sink.track("connect", "u1", {})
    assert sink.statistics().queued == 0
