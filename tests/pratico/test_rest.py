"""Pratico REST through the real quart-trio app (its test client: ASGI, no socket)."""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from pratico_daemon.http.app import create_app
from pratico_daemon.storage.aio import open_loop
from tests.pratico.conftest import Rig, open_rig
from tests.support.pg import create_test_database, drop_test_database

SNAPSHOT = {"document": {"store": {"page:1": {"name": "Intro"}}}}


class Http:
    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.client = create_app(rig.services).test_client()

    def bearer(self, sub: str = "trainer1", role: str = "teacher", org: str = "org1"
               ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.rig.services.auth.mint(sub, role, org)}"}

    async def send(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        response = await self.client.open(path, method=method, data=data, headers=hdrs)
        content = await response.get_data()
        parsed = orjson.loads(content) if response.mimetype == "application/json" else content
        return response.status_code, parsed, response

    async def create(self, title: str = "Algèbre linéaire", **headers: str) -> tuple[int, Any]:
        status, body, _ = await self.send("POST", "/rooms", {
            "capsule_id": "cap1", "title": title, "capsule_snapshot": SNAPSHOT,
            "params": {"navigation_mode": "trainer"}}, headers=headers or self.bearer())
        return status, body


@pytest.fixture
async def http(rig: Rig) -> Http:
    return Http(rig)


async def test_create_names_links_and_resolve(http: Http) -> None:
    status, first = await http.create()
    assert status == 201
    assert first["name"] == "algebre-lineaire"
    assert first["link"] == "http://127.0.0.1:8080/r/algebre-lineaire"
    status, second = await http.create()
    assert (status, second["name"]) == (201, "algebre-lineaire-2")
    status, body, _ = await http.send("GET", "/r/algebre-lineaire-2")  # public
    assert (status, body) == (200, {"id": second["id"], "name": "algebre-lineaire-2",
                                    "link": second["link"]})
    status, body, _ = await http.send("GET", "/r/nothing-here")
    assert (status, body["error"]["code"]) == (404, "not_found")
    status, room, _ = await http.send("GET", f"/rooms/{first['id']}", headers=http.bearer())
    assert status == 200
    assert room["capsule_id"] == "cap1"
    assert room["created_by"] == "trainer1"
    events = await http.rig.events(first["id"])
    assert [e.type for e in events] == ["session_started"]
    assert events[0].user_id == "trainer1"


async def test_who_may_do_what(http: Http) -> None:
    _, room = await http.create()
    path = f"/rooms/{room['id']}"
    status, body, _ = await http.send("POST", "/rooms", {"capsule_id": "c", "title": "t",
                                                         "capsule_snapshot": {}})
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    status, body = await http.create(**http.bearer("s1", role="student"))
    assert (status, body["error"]["code"]) == (403, "forbidden")
    for method, suffix in [("GET", ""), ("POST", "/end"), ("GET", "/events"),
                           ("GET", "/report")]:
        status, body, _ = await http.send(method, path + suffix, headers=http.bearer("other"))
        assert (status, body["error"]["code"]) == (403, "forbidden"), suffix
        status, _, _ = await http.send(method, path + suffix,
                                       headers=http.bearer("boss", role="admin", org="org2"))
        assert status == 403
    status, _, _ = await http.send("GET", path, headers=http.bearer("boss", role="admin"))
    assert status == 200
    status, body, _ = await http.send("GET", "/rooms/not-a-uuid", headers=http.bearer())
    assert (status, body["error"]["code"]) == (404, "not_found")
    status, body, _ = await http.send("GET", f"/rooms/{uuid.uuid4()}", headers=http.bearer())
    assert status == 404


async def test_rename(http: Http) -> None:
    _, a = await http.create("Alpha")
    _, b = await http.create("Beta")
    status, body, _ = await http.send("PATCH", f"/rooms/{b['id']}", {"name": "Ça Alpha"},
                                      headers=http.bearer())
    assert (status, body["name"]) == (200, "ca-alpha")
    status, body, _ = await http.send("PATCH", f"/rooms/{b['id']}", {"name": "ALPHA"},
                                      headers=http.bearer())
    assert (status, body["error"]["code"]) == (409, "conflict")
    status, body, _ = await http.send("PATCH", f"/rooms/{b['id']}", {"name": 4},
                                      headers=http.bearer())
    assert (status, body["error"]["code"]) == (400, "invalid_payload")
    # The old name is free, the new one resolves, joins use it.
    status, body, _ = await http.send("GET", "/r/ca-alpha")
    assert body["id"] == b["id"]
    assert (await http.send("GET", "/r/beta"))[0] == 404
    _, again = await http.create("Beta")
    assert again["name"] == "beta"
    guest = http.rig.client()
    reply = await http.rig.call(guest, "join", {"room": "ca-alpha", "display_name": "G"})
    assert reply["state"]["room"]["id"] == b["id"]
    assert a["name"] == "alpha"


async def test_snapshot_over_the_limit_is_413_with_a_code(http: Http) -> None:
    big = orjson.dumps({"capsule_id": "c", "title": "t",
                        "capsule_snapshot": {"blob": "x" * (20 * 1024 * 1024)}})
    status, body, _ = await http.send("POST", "/rooms", raw=big, headers=http.bearer())
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    # Just over the limit, under the app's own cap: refused by the route itself.
    limit = http.rig.services.config.limits.max_snapshot_bytes
    over = orjson.dumps({"capsule_id": "c", "title": "t",
                         "capsule_snapshot": {"blob": "x" * limit}})
    status, body, _ = await http.send("POST", "/rooms", raw=over, headers=http.bearer())
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    assert http.rig.ns.names == {}
    # Under the limit, a big capsule is fine: kept in the rooms row, not in checkpoints.
    big_ok = {"blob": "y" * (limit - 1024)}
    status, body, _ = await http.send("POST", "/rooms", {
        "capsule_id": "c", "title": "big", "capsule_snapshot": big_ok}, headers=http.bearer())
    assert status == 201
    record = await http.rig.services.stores.repos.rooms.get(uuid.UUID(body["id"]))
    assert record.capsule_snapshot == big_ok
    await http.rig.checkpointer.flush()
    checkpoint = await http.rig.services.stores.checkpoints.get(body["id"])
    assert checkpoint is not None
    assert "capsule_snapshot" not in checkpoint.state
    for bad in [b"{", b"[]", orjson.dumps({"capsule_id": "c", "title": "t"}),
                orjson.dumps({"capsule_id": "", "title": "t", "capsule_snapshot": {}}),
                orjson.dumps({"capsule_id": "c", "title": "t\x00", "capsule_snapshot": {}}),
                orjson.dumps({"capsule_id": "c", "title": "t", "capsule_snapshot": {},
                              "params": {"navigation_mode": "chaos"}})]:
        status, body, _ = await http.send("POST", "/rooms", raw=bad, headers=http.bearer())
        assert (status, body["error"]["code"]) == (400, "invalid_payload"), bad


async def test_end_events_and_report_after_the_room_is_gone(http: Http) -> None:
    rig = http.rig
    _, room = await http.create()
    trainer = rig.client("trainer1")
    await rig.call(trainer, "join", {"room": room["name"]})
    guest = rig.client()
    joined = await rig.call(guest, "join", {"room": room["name"], "display_name": "=cmd|x"})
    await rig.call(trainer, "launch_quiz", {"quiz_id": "qz", "questions": [
        {"id": "q1", "text": "?", "choices": ["a", "b"], "correct": 1}]})
    await rig.call(guest, "answer_quiz", {"quiz_id": "qz", "question_id": "q1", "choice": 1})
    await rig.call(trainer, "close_quiz", {"quiz_id": "qz"})
    await rig.call(guest, "chat_send", {"text": "merci"})
    status, body, _ = await http.send("POST", f"/rooms/{room['id']}/end",
                                      headers=http.bearer())
    assert (status, body) == (200, {"room_id": room["id"], "ended": True})
    assert guest.named("session_ended") == [{"room_id": room["id"], "reason": "trainer"}]
    status, body, _ = await http.send("POST", f"/rooms/{room['id']}/end",
                                      headers=http.bearer())
    assert status == 404
    assert (await http.send("GET", f"/r/{room['name']}"))[0] == 404

    # Paged events, in time order, still there.
    seen: list[dict[str, Any]] = []
    after = ""
    while True:
        status, page, _ = await http.send(
            "GET", f"/rooms/{room['id']}/events?limit=3{'&after=' + after if after else ''}",
            headers=http.bearer())
        assert status == 200
        seen.extend(page["items"])
        if page["next"] is None:
            break
        after = page["next"]
    types = [e["type"] for e in seen]
    assert types[0] == "session_started"
    assert types[-1] == "session_ended"
    assert "quiz_answered" in types
    assert [e["ts"] for e in seen] == sorted(e["ts"] for e in seen)
    assert len({e["id"] for e in seen}) == len(seen)
    for bad in ("limit=0", "limit=x", "limit=5000", "after=zzz"):
        status, body, _ = await http.send("GET", f"/rooms/{room['id']}/events?{bad}",
                                          headers=http.bearer())
        assert (status, body["error"]["code"]) == (400, "invalid_payload"), bad

    status, report, _ = await http.send("GET", f"/rooms/{room['id']}/report",
                                        headers=http.bearer("admin1", role="admin"))
    assert status == 200
    assert report["room"]["id"] == room["id"]
    assert report["chat_messages"] == 1
    pid = joined["participant_id"]
    assert report["quizzes"][0]["scores"] == {pid: 1}
    assert report["quizzes"][0]["questions"][0]["counts"] == [0, 1]
    guest_row = next(p for p in report["participants"] if p["participant_id"] == pid)
    assert guest_row["left_at"] == report["room"]["ended_at"]
    status, raw, response = await http.send("GET", f"/rooms/{room['id']}/report?format=csv",
                                            headers=http.bearer())
    assert status == 200
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(raw.decode())))
    names = {r["display_name"] for r in rows if r["section"] == "participant"}
    assert "'=cmd|x" in names  # a spreadsheet never runs a participant's name
    assert any(r["section"] == "answer" and r["correct"] == "True" for r in rows)


async def test_slug_race_between_two_daemons_on_one_database(tmp_path: Path) -> None:
    """Two daemons (two namespaces, one PostgreSQL) create "Algèbre" at once: one gets it."""
    db = await create_test_database()
    try:
        async with open_loop(), \
                open_rig(tmp_path / "a", "postgres", database=db, own_loop=False) as a, \
                open_rig(tmp_path / "b", "postgres", database=db, own_loop=False) as b:
            names: list[str] = []

            async def create(rig: Rig) -> None:
                names.append((await rig.launch(title="Algèbre")).name)

            for _ in range(3):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(create, a)
                    nursery.start_soon(create, b)
            assert sorted(names) == ["algebre", *sorted(f"algebre-{n}" for n in range(2, 7))]
    finally:
        await drop_test_database(db)


async def test_capsule_document_for_participants_only(http: Http) -> None:
    _, room = await http.create()
    _, other = await http.create("Other")
    guest = http.rig.client()
    joined = await http.rig.call(guest, "join", {"room": room["name"], "display_name": "G"})
    path = f"/rooms/{room['id']}/capsule"
    as_guest = {"Authorization": f"Bearer {joined['guest_token']}"}
    status, body, _ = await http.send("GET", path, headers=as_guest)
    assert (status, body) == (200, {"capsule_id": "cap1", "capsule_snapshot": SNAPSHOT})
    status, body, _ = await http.send("GET", f"/rooms/{other['id']}/capsule", headers=as_guest)
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, _, _ = await http.send("GET", path, headers=http.bearer())
    assert status == 200
    status, body, _ = await http.send("GET", path, headers=http.bearer("stranger"))
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body, _ = await http.send("GET", path)
    assert (status, body["error"]["code"]) == (401, "unauthorized")


async def test_nul_character_in_a_room_is_invalid_payload_not_unavailable(tmp_path, nursery):
    from tests.conftest import make_config, start_daemon
    from tests.support import http as client

    running = await start_daemon(nursery, make_config(tmp_path / "state"))
    token = running.token("trainer1", "teacher", "org1")
    reply = await client.request("POST", f"{running.url}/rooms", token=token, json={
        "capsule_id": "c", "title": "Nul\u0000room", "capsule_snapshot": {"x": "a\u0000b"}})
    assert reply.status == 400
    assert reply.json()["error"]["code"] == "invalid_payload"
    running.daemon.request_shutdown()
