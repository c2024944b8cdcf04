"""When neither Postgres nor the journal takes an answer: ERROR `unavailable`, answer undone."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.pratico.conftest import open_rig
from tests.support.tcp_proxy import TcpProxy

QUIZ = {"quiz_id": "qz", "questions": [
    {"id": "q1", "text": "?", "choices": ["a", "b"], "correct": 0}]}


async def test_answer_that_cannot_be_made_durable_is_refused_and_undone(
        tmp_path: Path, nursery: trio.Nursery) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    port = await nursery.start(proxy.run)
    async with open_rig(tmp_path, "postgres", pg_port=port) as rig:
        state = await rig.launch()
        trainer = rig.client("trainer1")
        await rig.call(trainer, "join", {"room": state.name})
        guest = rig.client()
        await rig.call(guest, "join", {"room": state.name, "display_name": "G"})
        await rig.call(trainer, "launch_quiz", QUIZ)
        store = rig.services.stores.events
        proxy.cut()  # Postgres gone...
        await store.journal.close()  # ...and the local journal cannot be written either
        for _ in range(2):  # the second try is not a `conflict`: the first was undone
            error = await rig.error(guest, "answer_quiz", {"quiz_id": "qz",
                                                           "question_id": "q1", "choice": 0})
            assert error.code == "unavailable"
        assert state.quiz.answers == {}
        closed = await rig.call(trainer, "close_quiz", {"quiz_id": "qz"})
        assert closed["results"][0]["counts"] == [0, 0]
        assert state.scores == {}
