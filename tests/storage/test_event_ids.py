"""Event ids: UUIDv7 made by the daemon (replays are idempotent by id)."""

from __future__ import annotations

import itertools
import os
import time
import uuid

from pratico_daemon.storage.protocols import new_event_id


def test_ids_are_valid_time_ordered_uuid7s() -> None:
    before_ms = time.time_ns() // 1_000_000
    ids = [new_event_id() for _ in range(10_000)]
    after_ms = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for event_id in ids[:100]:
        assert event_id.version == 7
        assert event_id.variant == uuid.RFC_4122
        assert uuid.UUID(str(event_id)) == event_id  # equal to one built the slow way
        assert hash(uuid.UUID(int=event_id.int)) == hash(event_id)
        assert before_ms <= event_id.int >> 80 <= after_ms
    stamps = [event_id.int >> 80 for event_id in ids]
    assert stamps == sorted(stamps)


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then leave at once
        os.write(write_end, b"".join(new_event_id().bytes for _ in range(10)))
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    data = os.read(read_end, 1000)
    os.close(read_end)
    child = {data[i:i + 16][8:] for i in range(0, len(data), 16)}
    mine = {new_event_id().bytes[8:] for _ in range(10)}  # random bits only
    assert len(child) == 10
    assert not child & mine


def test_ids_made_one_after_another_are_strictly_increasing() -> None:
    # Thousands per millisecond: the ones sharing a millisecond must keep their order too
    # (an answer and the quiz's close made in the same millisecond report in that order).
    ids = [new_event_id() for _ in range(20_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert [i.bytes for i in ids] == sorted(i.bytes for i in ids)  # as Postgres sorts uuid
    shared = sum(1 for a, b in itertools.pairwise(ids) if a.int >> 80 == b.int >> 80)
    assert shared > 1000  # the case under test did happen
