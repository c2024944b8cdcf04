"""The outage journal on its own: order, atomic batches, survival across a restart."""

from __future__ import annotations

from pathlib import Path

from pratico_daemon.storage.journal import Journal, from_us, to_us
from pratico_daemon.storage.protocols import RoomEvent


def rows(events: list[RoomEvent]) -> list[tuple]:
    return [(e.id, e.created_at, e.room_id, e.user_id, e.type, '{"k": 1}') for e in events]


async def test_append_read_in_order_and_drop_the_replayed_prefix(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "j.sqlite")
    first = [RoomEvent("r", "a", user_id="u") for _ in range(3)]
    second = [RoomEvent("r", "b") for _ in range(2)]
    await journal.append(rows(first))
    await journal.append(rows(second))
    assert journal.depth == 5
    last, chunk = await journal.oldest(4)
    assert [r[0] for r in chunk] == [e.id for e in first + second[:1]]
    assert chunk[0][1:5] == (first[0].created_at, "r", "u", "a")
    await journal.drop_through(last)
    assert journal.depth == 1
    _, rest = await journal.oldest(10)
    assert [r[0] for r in rest] == [second[1].id]
    await journal.close()


async def test_depth_and_rows_survive_a_restart(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "j.sqlite")
    events = [RoomEvent("r", "answer") for _ in range(7)]
    await journal.append(rows(events))
    await journal.close()
    reopened = await Journal.open(tmp_path / "j.sqlite")
    assert reopened.depth == 7
    _, back = await reopened.oldest(100)
    assert [r[0] for r in back] == [e.id for e in events]
    await reopened.close()


def test_microsecond_times_round_trip() -> None:
    event = RoomEvent("r", "t")
    assert from_us(to_us(event.created_at)) == event.created_at
