"""A whole Pratico session in-process: real registry, real stores, test clients.

The same scenario as the end-to-end test (trainer + 30 participants), driven
through the namespace's handlers, on SQLite and on PostgreSQL; the quiz
deadline runs on trio's MockClock.
"""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path

import pytest
import trio
import trio.testing

from pratico_daemon.pratico import report as reports
from tests.pratico.conftest import Rig, TestClient, open_rig, trio_wall_clock


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    # Jump only once everything has been idle for a while in real time, so
    # that SQLite/Postgres I/O in threads or sockets is never "timed out"
    # (0.05 s let a slow SQLite write on a loaded CI machine see a deadline pass).
    return trio.testing.MockClock(autojump_threshold=0.25)


QUESTIONS = [
    {"id": "q1", "text": "2 + 2 ?", "choices": ["3", "4", "5"], "correct": 1},
    {"id": "q2", "text": "Capitale ?", "choices": ["Paris", "Lyon"], "correct": 0},
]


@pytest.mark.parametrize("kind", ["embedded", "postgres"])
async def test_whole_session_with_a_trainer_and_30_participants(
        tmp_path: Path, mock_clock: trio.testing.MockClock, kind: str) -> None:
    async with open_rig(tmp_path, kind, now=trio_wall_clock()) as rig:
        await _whole_session(rig)


async def _whole_session(rig: Rig) -> None:
    state = await rig.launch(navigation_mode="trainer")
    assert state.name == "algebre-lineaire"
    room_id = state.room_id
    record = await rig.services.stores.repos.rooms.get(uuid.UUID(room_id))
    assert record is not None
    assert record.capsule_snapshot == {"document": {"pages": 3}}

    trainer = rig.client("trainer1")
    joined = await rig.call(trainer, "join", {"room": "algebre-lineaire"})
    assert joined["guest_token"] is None
    assert joined["role"] == "trainer"
    assert joined["state"]["room"]["link"].endswith("/r/algebre-lineaire")

    guests: list[TestClient] = []
    tokens: dict[str, str] = {}
    pids: list[str] = []
    for i in range(30):
        guest = rig.client()
        reply = await rig.call(guest, "join", {"room": "algebre-lineaire",
                                               "display_name": f"Élève {i}"})
        assert reply["guest_token"]
        assert reply["state"]["navigation_mode"] == "trainer"
        pids.append(reply["participant_id"])
        tokens[reply["participant_id"]] = reply["guest_token"]
        guests.append(guest)
    assert len(trainer.named("participant_joined")) == 30
    everyone = [trainer, *guests]

    # Navigation, trainer-led: everyone follows; a participant may not move.
    await rig.call(trainer, "set_page", {"page": 2})
    assert all(c.named("page_changed")[-1] == {"page": 2, "by": "trainer"} for c in everyone)
    assert (await rig.error(guests[0], "set_page", {"page": 5})).code == "forbidden"
    # Free mode: a participant's own page is acked, not broadcast.
    await rig.call(trainer, "set_params", {"navigation_mode": "free",
                                           "collaboration": {"draw": True}})
    assert guests[5].named("params_changed")[-1] == {"navigation_mode": "free",
                                                     "collaboration": {"draw": True}}
    assert await rig.call(guests[0], "set_page", {"page": "intro"}) == {"page": "intro"}
    assert not any(p == {"page": "intro", "by": "trainer"} for p in guests[1].named("page_changed"))
    assert len(guests[1].named("page_changed")) == 1
    await rig.call(trainer, "set_page", {"page": 3})
    assert guests[1].named("page_changed")[-1] == {"page": 3, "by": "trainer"}

    # Quiz with a 30 s deadline: guests never see `correct` before the close.
    launched = await rig.call(trainer, "launch_quiz", {"quiz_id": "quiz-1",
                                                      "questions": QUESTIONS,
                                                      "time_limit_s": 30})
    assert launched["deadline"]
    seen = guests[3].named("quiz_launched")[-1]
    assert all("correct" not in q for q in seen["questions"])
    state_view = await rig.call(guests[3], "get_state")
    assert all("correct" not in q for q in state_view["quiz"]["questions"])
    started = trio.current_time()
    for i, guest in enumerate(guests):
        choice = 1 if i < 20 else 0  # 20 right on q1
        assert await rig.call(guest, "answer_quiz", {"quiz_id": "quiz-1", "question_id": "q1",
                                                     "choice": choice}) == {
            "accepted": True, "quiz_id": "quiz-1", "question_id": "q1"}
    assert (await rig.error(guests[0], "answer_quiz", {"quiz_id": "quiz-1",
                                                       "question_id": "q1",
                                                       "choice": 0})).code == "conflict"
    assert (await rig.error(guests[0], "answer_quiz", {"quiz_id": "quiz-1",
                                                       "question_id": "nope",
                                                       "choice": 0})).code == "not_found"
    await rig.call(guests[0], "answer_quiz", {"quiz_id": "quiz-1", "question_id": "q2",
                                              "choice": 0})
    # The deadline closes it (MockClock jumps there once everyone is idle).
    await trio.sleep_until(started + 29)
    assert not guests[0].named("quiz_closed")
    await trio.sleep_until(started + 31)
    closed = guests[0].named("quiz_closed")[-1]
    assert closed["results"][0] == {"question_id": "q1", "correct": 1, "counts": [10, 20, 0]}
    assert closed["results"][1]["counts"] == [1, 0]
    assert closed["scores"][pids[0]] == 2
    assert closed["scores"][pids[25]] == 0
    assert guests[9].named("scores_updated")[-1]["scores"][pids[9]] == 1
    late = await rig.error(guests[29], "answer_quiz", {"quiz_id": "quiz-1", "question_id": "q2",
                                                       "choice": 0})
    assert late.code == "quiz_closed"

    # Chat: everyone receives it, the sender too, text exactly as sent.
    text = "  Bonjour à tous 👋\n"
    sent = await rig.call(guests[4], "chat_send", {"text": text})
    message = trainer.named("chat_message")[-1]
    assert message["id"] == sent["message_id"]
    assert message["text"] == text
    assert guests[4].named("chat_message")[-1] == message
    assert message["display_name"] == "Élève 4"
    assert (await rig.error(guests[4], "chat_send", {"text": "   "})).code == "invalid_payload"

    # A participant reconnects as itself: same id, same score.
    await rig.ns.disconnect(guests[7], "transport close")
    await rig.ns.gone(guests[7])
    assert trainer.named("participant_presence")[-1] == {"participant_id": pids[7],
                                                         "connected": False}
    again = rig.client()
    back = await rig.call(again, "join", {"room": "algebre-lineaire",
                                          "guest_token": tokens[pids[7]]})
    assert back["participant_id"] == pids[7]
    assert back["state"]["scores"][pids[7]] == 1
    assert back["state"]["chat"][-1]["text"] == text
    assert back["state"]["quiz"]["questions"][0]["correct"] == 1  # closed: now visible
    guests[7] = again

    # End: everyone hears it, connections close, the room and its rows go.
    ended = await rig.call(trainer, "end_session")
    assert ended == {"room_id": room_id, "ended": True}
    await trio.sleep(0.01)  # the trainer's own connection closes after its ack
    for client in [trainer, *guests]:
        assert client.named("session_ended") == [{"room_id": room_id, "reason": "trainer"}]
        assert client.closed == "session ended"
    assert rig.services.rooms.get(room_id) is None
    assert await rig.services.stores.repos.rooms.get(uuid.UUID(room_id)) is None
    assert await rig.services.stores.repos.chat.count(uuid.UUID(room_id)) == 0
    await rig.checkpointer.flush()
    assert await rig.services.stores.checkpoints.get(room_id) is None
    assert (await rig.error(guests[0], "get_state")).code == "forbidden"

    # The report is built from room_events, which remain.
    events = await rig.events(room_id)
    types = [e.type for e in events]
    assert types[0] == "session_started"
    assert types[-1] == "session_ended"
    assert types.count("quiz_answered") == 31
    answered = next(e for e in events if e.type == "quiz_answered")
    assert answered.user_id == "trainer1"
    assert answered.data["display_name"] == "Élève 0"
    assert set(answered.data) >= {"choice", "correct", "response_time_ms", "participant_id"}
    report = reports.build(room_id, events)
    assert report["room"]["name"] == "algebre-lineaire"
    assert report["room"]["created_by"] == "trainer1"
    assert report["room"]["ended_at"] is not None
    assert len(report["participants"]) == 31
    by_id = {p["participant_id"]: p for p in report["participants"]}
    assert by_id[pids[0]]["left_at"] == report["room"]["ended_at"]
    assert by_id[pids[0]]["seconds_present"] >= 29
    assert isinstance(by_id[pids[7]]["seconds_present"], int)
    assert report["quizzes"][0]["questions"][0]["counts"] == [10, 20, 0]
    assert report["quizzes"][0]["scores"][pids[0]] == 2
    assert len(report["quizzes"][0]["answers"]) == 31
    assert report["chat_messages"] == 1
    assert {"session_started", "quiz_launched", "quiz_closed",
            "session_ended"} <= {t["type"] for t in report["timeline"]}
    rows = list(csv.DictReader(io.StringIO(reports.to_csv(report))))
    assert sum(r["section"] == "participant" for r in rows) == 31
    assert sum(r["section"] == "answer" for r in rows) == 31
