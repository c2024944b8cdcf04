"""A room comes back from its checkpoint: state, acked answers, and the ORIGINAL deadline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from pratico_daemon.pratico import restore
from tests.pratico.conftest import open_rig, trio_wall_clock
from tests.support.pg import create_test_database, drop_test_database


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.25)


QUIZ = {"quiz_id": "qz", "time_limit_s": 60, "questions": [
    {"id": "q1", "text": "?", "choices": ["a", "b"], "correct": 0},
    {"id": "q2", "text": "?", "choices": ["a", "b"], "correct": 1}]}


@pytest.mark.parametrize("kind", ["embedded", "postgres"])
async def test_restore_brings_back_room_answers_and_deadline(
        tmp_path: Path, mock_clock: trio.testing.MockClock, kind: str) -> None:
    now = trio_wall_clock()
    db = await create_test_database() if kind == "postgres" else None
    try:
        await _restore_scenario(tmp_path, kind, now, db)
    finally:
        if db is not None:
            await drop_test_database(db)


async def _restore_scenario(tmp_path: Path, kind: str, now: Any, db: str | None) -> None:
    # The first daemon's life: a quiz is open when it stops without ending anything.
    async with open_rig(tmp_path, kind, now=now, database=db) as rig:
        state = await rig.launch()
        trainer = rig.client("trainer1")
        await rig.call(trainer, "join", {"room": state.name})
        guests, replies = [], []
        for i in range(3):
            guest = rig.client()
            replies.append(await rig.call(guest, "join", {"room": state.name,
                                                          "display_name": f"G{i}"}))
            guests.append(guest)
        await rig.call(trainer, "set_page", {"page": 4})
        await rig.call(trainer, "chat_send", {"text": "hello"})
        launched_at = trio.current_time()
        launched = await rig.call(trainer, "launch_quiz", QUIZ)
        await rig.call(guests[0], "answer_quiz", {"quiz_id": "qz", "question_id": "q1",
                                                  "choice": 0})
        await rig.call(guests[1], "answer_quiz", {"quiz_id": "qz", "question_id": "q1",
                                                  "choice": 1})
        await rig.checkpointer.flush()
        room_id = state.room_id
    await trio.sleep(10)  # the daemon is down for ten seconds

    async with open_rig(tmp_path, kind, now=now, database=db) as rig:
        checkpoints = await rig.services.stores.checkpoints.list("pratico")
        assert [cp.room_id for cp in checkpoints] == [room_id]
        await restore(rig.services, checkpoints[0])
        room = rig.services.rooms.get(room_id)
        assert room is not None
        restored = room.state
        assert restored.page == 4
        assert restored.capsule_snapshot == {"document": {"pages": 3}}
        assert [p.connected for p in restored.participants.values()] == [False] * 4

        back = rig.client()
        reply = await rig.call(back, "join", {"room": state.name,
                                              "guest_token": replies[0]["guest_token"]})
        assert reply["participant_id"] == replies[0]["participant_id"]
        view = reply["state"]
        assert view["quiz"]["open"] is True
        assert view["quiz"]["deadline"] == launched["deadline"]
        assert view["chat"][-1]["text"] == "hello"
        again = await rig.error(back, "answer_quiz", {"quiz_id": "qz", "question_id": "q1",
                                                      "choice": 0})
        assert again.code == "conflict"  # the acknowledged answer came back
        await rig.call(back, "answer_quiz", {"quiz_id": "qz", "question_id": "q2",
                                             "choice": 1})
        await trio.sleep_until(launched_at + 59)
        assert not back.named("quiz_closed")
        await trio.sleep_until(launched_at + 61)
        closed = back.named("quiz_closed")
        assert len(closed) == 1
        assert closed[0]["by"] == "deadline"
        assert closed[0]["results"][0]["counts"] == [1, 1]
        assert closed[0]["scores"] == {replies[0]["participant_id"]: 2,
                                       replies[1]["participant_id"]: 0}


async def test_checkpoint_of_an_ended_room_is_dropped(tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig:
        state = await rig.launch()
        await rig.checkpointer.flush()
        checkpoint = await rig.services.stores.checkpoints.get(state.room_id)
        assert checkpoint is not None
        assert await rig.ns.end_room(state.room_id, "trainer1", "trainer")
        assert await rig.ns.restore(checkpoint) is None
        assert rig.services.rooms.get(state.room_id) is None


async def test_answers_acked_after_the_last_checkpoint_come_back_from_events(
        tmp_path: Path) -> None:
    # Checkpoints at most once an hour, except when flushed: the answers below
    # are acknowledged (durable in room_events) but in no checkpoint.
    async with open_rig(tmp_path, redis={"checkpoint_interval_s": 3600}) as rig:
        state = await rig.launch()
        trainer = rig.client("trainer1")
        await rig.call(trainer, "join", {"room": state.name})
        guest = rig.client()
        joined = await rig.call(guest, "join", {"room": state.name, "display_name": "G"})
        await rig.call(trainer, "launch_quiz", {**QUIZ, "time_limit_s": 600})
        await rig.checkpointer.flush()
        await rig.call(guest, "answer_quiz", {"quiz_id": "qz", "question_id": "q1",
                                              "choice": 0})
        late = rig.client()
        late_reply = await rig.call(late, "join", {"room": state.name, "display_name": "Late"})
        await rig.call(late, "answer_quiz", {"quiz_id": "qz", "question_id": "q2",
                                             "choice": 1})
        stored = await rig.services.stores.checkpoints.get(state.room_id)
        assert stored is not None
        assert stored.state["quiz"]["answers"] == {}
    async with open_rig(tmp_path) as rig:
        (checkpoint,) = await rig.services.stores.checkpoints.list("pratico")
        await restore(rig.services, checkpoint)
        restored = rig.services.rooms.get(state.room_id).state
        answers = restored.quiz.answers
        assert answers[joined["participant_id"]]["q1"].choice == 0
        assert answers[late_reply["participant_id"]]["q2"].correct is True
        again = rig.client()
        await rig.call(again, "join", {"room": state.name,
                                       "guest_token": late_reply["guest_token"]})
        error = await rig.error(again, "answer_quiz", {"quiz_id": "qz", "question_id": "q2",
                                                       "choice": 0})
        assert error.code == "conflict"
        view = await rig.call(rig.client("trainer1"), "join", {"room": state.name})
        assert view["state"]["quiz"]["open"] is True
        assert view["state"]["quiz"]["questions"][1]["correct"] == 1  # the trainer sees it


async def test_everything_after_a_stale_checkpoint_is_replayed(tmp_path: Path) -> None:
    """Only the creation was checkpointed: joins, page, params, kick, quiz come from events."""
    async with open_rig(tmp_path, redis={"checkpoint_interval_s": 3600}) as rig:
        state = await rig.launch()
        await rig.checkpointer.flush()
        trainer = rig.client("trainer1")
        await rig.call(trainer, "join", {"room": state.name})
        guests = [rig.client() for _ in range(3)]
        replies = [await rig.call(g, "join", {"room": state.name, "display_name": f"G{i}"})
                   for i, g in enumerate(guests)]
        await rig.call(trainer, "set_page", {"page": "p-9"})
        await rig.call(trainer, "set_params", {"navigation_mode": "free",
                                               "collaboration": {"pen": "red"}})
        await rig.call(trainer, "kick", {"participant_id": replies[2]["participant_id"]})
        await rig.call(trainer, "launch_quiz", {**QUIZ, "quiz_id": "old", "time_limit_s": None})
        await rig.call(guests[0], "answer_quiz", {"quiz_id": "old", "question_id": "q1",
                                                  "choice": 0})
        await rig.call(trainer, "close_quiz", {"quiz_id": "old"})
        await rig.call(trainer, "launch_quiz", {**QUIZ, "time_limit_s": 600})
        await rig.call(guests[1], "answer_quiz", {"quiz_id": "qz", "question_id": "q2",
                                                  "choice": 1})
        await rig.call(guests[1], "chat_send", {"text": "still here"})
        live = state.view(None, "")
        stored = await rig.services.stores.checkpoints.get(state.room_id)
        assert stored is not None
        assert stored.state["participants"] == []
    async with open_rig(tmp_path) as rig:
        (checkpoint,) = await rig.services.stores.checkpoints.list("pratico")
        await restore(rig.services, checkpoint)
        restored = rig.services.rooms.get(state.room_id).state
        view = restored.view(None, "")
        for key in ("page", "navigation_mode", "collaboration", "scores", "chat"):
            assert view[key] == live[key], key
        # Everyone is back, nobody is connected yet.
        assert view["participants"] == [{**p, "connected": False} for p in live["participants"]]
        assert view["quiz"]["deadline"] == live["quiz"]["deadline"]
        assert restored.quiz.answers[replies[1]["participant_id"]]["q2"].correct is True
        assert restored.scores == {replies[0]["participant_id"]: 1}
        kicked = rig.client()
        error = await rig.error(kicked, "join", {"room": state.name,
                                                 "guest_token": replies[2]["guest_token"]})
        assert error.message == "guest_token: revoked"
        trainer = rig.client("trainer1")
        await rig.call(trainer, "join", {"room": state.name})
        assert (await rig.error(trainer, "close_quiz", {"quiz_id": "old"})).code == "quiz_closed"
        await rig.call(trainer, "close_quiz", {"quiz_id": "qz"})
        assert (await rig.error(trainer, "launch_quiz", {**QUIZ, "quiz_id": "old"})).code == \
            "conflict"
