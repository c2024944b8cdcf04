"""The product inside the real `Daemon` (embedded): REST, a JSON client, the end, the report."""

from __future__ import annotations

import trio

from tests.conftest import RunningDaemon
from tests.pratico.wire import JsonPeer
from tests.support import http


async def test_pratico_in_the_daemon(daemon: RunningDaemon, nursery: trio.Nursery) -> None:
    token = daemon.token("trainer1")
    created = await http.request("POST", f"{daemon.url}/rooms", token=token, json={
        "capsule_id": "c", "title": "Wired", "capsule_snapshot": {}})
    assert created.status == 201, created.body
    room = created.json()
    trainer = await JsonPeer.open(nursery, daemon.ws_url, token)
    assert (await trainer.ok("join", room="wired"))["role"] == "trainer"
    guest = await JsonPeer.open(nursery, daemon.ws_url)
    joined = await guest.ok("join", room="wired", display_name="Ana")
    await trainer.ok("chat_send", text="bienvenue")
    await guest.wait_for(lambda: guest.named("chat_message"))
    checkpointer = daemon.daemon.services.checkpointer
    await checkpointer.flush()
    stored = await daemon.daemon.services.stores.checkpoints.get(room["id"])
    assert stored is not None
    assert stored.kind == "pratico"
    await trainer.ok("end_session")
    await guest.wait_for(lambda: guest.closed is not None)
    await checkpointer.flush()
    assert await daemon.daemon.services.stores.checkpoints.get(room["id"]) is None
    report = await http.get(f"{daemon.url}/rooms/{room['id']}/report", token=token)
    assert report.status == 200
    people = {p["participant_id"]: p for p in report.json()["participants"]}
    assert people[joined["participant_id"]]["display_name"] == "Ana"
    assert report.json()["chat_messages"] == 1
