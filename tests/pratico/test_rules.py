"""Pratico rules and bad input, in-process: each refusal has a clear code and changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.pratico.conftest import Rig, TestClient, open_rig, trio_wall_clock

QUIZ = {"quiz_id": "qz", "questions": [
    {"id": "q1", "text": "?", "choices": ["a", "b"], "correct": 0}]}


async def room_with(rig: Rig, guests: int = 2, title: str = "Room") -> tuple[
        Any, TestClient, list[TestClient], list[dict[str, Any]]]:
    state = await rig.launch(title=title)
    trainer = rig.client("trainer1")
    await rig.call(trainer, "join", {"room": state.name})
    clients, replies = [], []
    for i in range(guests):
        c = rig.client()
        replies.append(await rig.call(c, "join", {"room": state.name, "display_name": f"G{i}"}))
        clients.append(c)
    return state, trainer, clients, replies


async def test_participant_cannot_send_trainer_events(rig: Rig) -> None:
    state, _trainer, (guest, _other), replies = await room_with(rig)
    before = state.snapshot()
    for event, payload in [
        ("launch_quiz", QUIZ), ("close_quiz", {"quiz_id": "qz"}),
        ("set_params", {"navigation_mode": "free"}), ("set_activity", {"activity": "x"}),
        ("kick", {"participant_id": replies[1]["participant_id"]}), ("end_session", {}),
        ("change_capsule", {"capsule_id": "c2", "capsule_snapshot": {}}),
    ]:
        error = await rig.error(guest, event, payload)
        assert error.code == "forbidden", event
    assert state.snapshot() == before
    assert rig.services.rooms.get(state.room_id) is not None
    # A signed-in teacher who is not the room's creator is a participant, not its trainer.
    stranger = rig.client("teacher2")
    await rig.call(stranger, "join", {"room": state.name, "display_name": "T2"})
    assert (await rig.error(stranger, "end_session")).code == "forbidden"
    # An admin of the room's org may act as its trainer; an admin of another org may not.
    outsider = rig.client("admin9", role="admin", org="org2")
    reply = await rig.call(outsider, "join", {"room": state.name, "display_name": "A9"})
    assert reply["role"] == "guest"
    admin = rig.client("admin1", role="admin", org="org1")
    assert (await rig.call(admin, "join", {"room": state.name}))["role"] == "trainer"
    await rig.call(admin, "set_activity", {"activity": {"kind": "poll"}})
    assert guest.named("activity_changed") == [{"activity": {"kind": "poll"}}]


async def test_not_joined_and_unknown_rooms(rig: Rig) -> None:
    await rig.launch()
    lost = rig.client()
    assert (await rig.error(lost, "chat_send", {"text": "hi"})).code == "forbidden"
    assert (await rig.error(lost, "join", {"room": "nope", "display_name": "x"})).code == \
        "not_found"
    assert (await rig.error(lost, "join", {"room": "algebre-lineaire"})).code == \
        "invalid_payload"
    assert (await rig.error(lost, "join", {"room": 5})).code == "invalid_payload"


async def test_guest_token_for_another_room_or_revoked_is_refused(rig: Rig) -> None:
    state_a, trainer, (guest, victim), replies = await room_with(rig, title="Room A")
    state_b = await rig.launch(title="Room B")
    intruder = rig.client()
    error = await rig.error(intruder, "join", {"room": state_b.name,
                                               "guest_token": replies[0]["guest_token"]})
    assert error.code == "unauthorized"
    assert "another room" in error.message
    assert intruder.data == {}
    forged = await rig.error(intruder, "join", {"room": state_a.name,
                                                "guest_token": "eyJ.bad.token"})
    assert forged.code == "unauthorized"

    victim_id = replies[1]["participant_id"]
    assert await rig.call(trainer, "kick", {"participant_id": victim_id}) == {
        "participant_id": victim_id, "kicked": True}
    assert victim.named("kicked") == [{"participant_id": victim_id}]
    assert victim.closed == "kicked"
    assert guest.named("participant_left")[-1] == {"participant_id": victim_id,
                                                   "reason": "kicked"}
    back = rig.client()
    error = await rig.error(back, "join", {"room": state_a.name,
                                           "guest_token": replies[1]["guest_token"]})
    assert (error.code, error.message) == ("unauthorized", "guest_token: revoked")
    assert victim_id not in state_a.participants


async def test_quiz_rules(rig: Rig) -> None:
    state, trainer, (guest, _), _ = await room_with(rig)
    assert (await rig.error(guest, "answer_quiz", {"quiz_id": "qz", "question_id": "q1",
                                                   "choice": 0})).code == "not_found"
    await rig.call(trainer, "launch_quiz", QUIZ)  # no time limit: the trainer closes
    assert (await rig.error(trainer, "launch_quiz", {**QUIZ, "quiz_id": "other"})).code == \
        "conflict"
    for bad in ({"choice": 2}, {"choice": -1}, {"choice": True}, {"choice": "0"}):
        error = await rig.error(guest, "answer_quiz", {"quiz_id": "qz", "question_id": "q1",
                                                       **bad})
        assert error.code == "invalid_payload", bad
    assert (await rig.error(trainer, "answer_quiz", {"quiz_id": "qz", "question_id": "q1",
                                                     "choice": 0})).code == "forbidden"
    await rig.call(guest, "answer_quiz", {"quiz_id": "qz", "question_id": "q1", "choice": 0})
    closed = await rig.call(trainer, "close_quiz", {"quiz_id": "qz"})
    assert closed["results"] == [{"question_id": "q1", "correct": 0, "counts": [1, 0]}]
    assert (await rig.error(trainer, "close_quiz", {"quiz_id": "qz"})).code == "quiz_closed"
    assert (await rig.error(guest, "answer_quiz", {"quiz_id": "qz", "question_id": "q1",
                                                   "choice": 1})).code == "quiz_closed"
    assert (await rig.error(trainer, "launch_quiz", QUIZ)).code == "conflict"  # id used once
    for bad in ({"questions": []}, {"questions": [{"id": "q", "choices": ["a"], "text": "",
                                                   "correct": 1}]},
                {"questions": "x"}, {"time_limit_s": -1}, {"quiz_id": ""}):
        error = await rig.error(trainer, "launch_quiz", {**QUIZ, "quiz_id": "n", **bad})
        assert error.code == "invalid_payload", bad
    assert state.scores == {_pid(state, "G0"): 1}


def _pid(state: Any, name: str) -> str:
    return next(p.participant_id for p in state.participants.values() if p.display_name == name)


async def test_chat_limits(rig: Rig) -> None:
    state, trainer, (guest, _), _ = await room_with(rig)
    limit = rig.services.config.limits.max_chat_chars
    assert (await rig.error(guest, "chat_send", {"text": ""})).code == "invalid_payload"
    assert (await rig.error(guest, "chat_send", {"text": "x" * (limit + 1)})).code == \
        "invalid_payload"
    assert (await rig.error(guest, "chat_send", {"text": 3})).code == "invalid_payload"
    await rig.call(guest, "chat_send", {"text": "x" * limit})
    codes = []
    for i in range(20):
        try:
            await rig.call(guest, "chat_send", {"text": f"m{i}"})
            codes.append("ok")
        except Exception as exc:
            codes.append(exc.code)  # type: ignore[attr-defined]
    assert "rate_limited" in codes
    error = await rig.error(guest, "chat_send", {"text": "again"})
    assert error.data["retry_after"] > 0
    # The trainer has its own bucket.
    await rig.call(trainer, "chat_send", {"text": "calm down"})
    assert len(state.chat) == codes.count("ok") + 2


async def test_history_is_bounded(tmp_path: Path) -> None:
    async with open_rig(tmp_path, rooms={"chat_history": 5}) as rig:
        state, trainer, _, _ = await room_with(rig, guests=0)
        for i in range(8):
            await rig.call(trainer, "chat_send", {"text": f"m{i}"})
        late = rig.client()
        reply = await rig.call(late, "join", {"room": state.name, "display_name": "Late"})
        assert [m["text"] for m in reply["state"]["chat"]] == [f"m{i}" for i in range(3, 8)]


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.25)


async def test_empty_room_ends_by_itself(tmp_path: Path,
                                         mock_clock: trio.testing.MockClock) -> None:
    async with open_rig(tmp_path, now=trio_wall_clock(), rooms={"empty_timeout_s": 600}) as rig:
        state, trainer, (guest,), _ = await room_with(rig, guests=1)
        t0 = trio.current_time()
        await rig.ns.disconnect(guest, "transport close")
        await rig.ns.gone(guest)
        await rig.ns.disconnect(trainer, "transport close")
        await trio.sleep(300)
        await rig.ns.reconnected(trainer)  # back within the window: the timer is disarmed
        await trio.sleep(500)
        assert rig.services.rooms.get(state.room_id) is not None
        await rig.call(trainer, "leave")
        await trio.sleep(599)
        assert rig.services.rooms.get(state.room_id) is not None
        await trio.sleep(2)
        assert rig.services.rooms.get(state.room_id) is None
        assert trio.current_time() - t0 >= 1400
        events = await rig.events(state.room_id)
        assert events[-1].type == "session_ended"
        assert events[-1].data["reason"] == "empty"
        assert await rig.services.stores.repos.rooms.get_by_name(state.name) is None
        # The name is free again.
        again = await rig.launch(title="Room")
        assert again.name == state.name


async def test_join_twice_on_one_connection_is_the_same_participant(rig: Rig) -> None:
    state, trainer, (guest,), replies = await room_with(rig, guests=1)
    again = await rig.call(guest, "join", {"room": state.name, "display_name": "Other"})
    assert again["participant_id"] == replies[0]["participant_id"]
    assert len(state.participants) == 2
    assert len(trainer.named("participant_joined")) == 1
    other = await rig.launch(title="Other room")
    error = await rig.error(guest, "join", {"room": other.name, "display_name": "G"})
    assert error.code == "conflict"
