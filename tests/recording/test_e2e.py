"""Recording end to end: a real daemon, real aiortc peers in a subprocess, a real moto S3.

Three participants send distinct tones (440, 660 and 880 Hz) from their own
aiortc peers; the recorder inside the daemon mixes the consenting ones, and
at the session's end the object in S3 is decoded and its spectrum checked.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from pratico_daemon.config import Config
from pratico_daemon.conversation import service_for
from pratico_daemon.daemon import Daemon
from pratico_daemon.recording import create_namespace
from pratico_daemon.recording.mixer import RATE
from tests.conftest import RunningDaemon, make_config
from tests.recording.audio import decode, tone_levels
from tests.recording.conftest import MotoS3
from tests.support import http
from tests.support.node import NodeClient, start_python_client

pytestmark = pytest.mark.slow
TONES = [440.0, 660.0, 880.0]


def recording_config(state: Path, s3: MotoS3 | None, *, stores: dict[str, Any] | None = None,
                     **recording: Any) -> Config:
    section = s3.mapping(**recording) if s3 is not None else {"enabled": False}
    return make_config(state, recording=section, **(stores or {}))


def production(pg_dsn: str, redis_prefix: str) -> dict[str, Any]:
    """Config sections for PostgreSQL + Redis (a fresh database and key prefix per test)."""
    from tests.support.redis import REDIS_URL

    return {"postgres": {"dsn": pg_dsn},
            "redis": {"url": REDIS_URL, "key_prefix": redis_prefix}}


async def start(nursery: trio.Nursery, config: Config) -> RunningDaemon:
    daemon = Daemon(config, products=(create_namespace,))
    addresses = await nursery.start(daemon.run)
    return RunningDaemon(daemon, addresses)


class Session:
    """REST helpers for one slot that starts a second from now."""

    def __init__(self, daemon: RunningDaemon) -> None:
        self.daemon = daemon
        self.slot_id = ""
        self.session_id = ""

    async def rest(self, method: str, path: str, user: str, body: Any = None) -> Any:
        role = "admin" if user == "admin" else "student"
        reply = await http.request(method, f"{self.daemon.url}{path}", json=body,
                                   token=self.daemon.token(user, role))
        assert reply.status in (200, 201), (path, reply.status, reply.body)
        return reply.json()

    async def open(self, users: list[str]) -> None:
        start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        slot = await self.rest("POST", "/timeslots", "admin", {
            "targetLanguageCode": "en", "level": "B1", "startTime": start.isoformat(),
            "durationMinutes": 5, "minParticipants": 2, "maxParticipants": len(users)})
        self.slot_id = slot["id"]
        for user in users:
            await self.rest("POST", f"/timeslots/{self.slot_id}/register", user)
        await trio.sleep(max(0.0, (start - dt.datetime.now(dt.UTC)).total_seconds()) + 0.2)

    async def join(self, user: str, consent: bool) -> dict[str, Any]:
        reply = await self.rest("POST", "/sessions/join", user,
                                {"timeSlotId": self.slot_id, "recordingConsent": consent})
        self.session_id = reply["sessionId"]
        return reply

    async def leave(self, user: str) -> None:
        await self.rest("POST", f"/sessions/{self.session_id}/leave", user)

    async def consent(self, user: str, value: bool) -> None:
        await self.rest("PATCH", "/sessions/current/media", user, {"recordingConsent": value})

    async def view(self) -> Any:
        return await self.rest("GET", f"/sessions/{self.session_id}", "admin")


async def start_peers(nursery: trio.Nursery, daemon: RunningDaemon,
                      peers: list[tuple[str, float, bool]]) -> NodeClient:
    specs = [{"user": u, "token": daemon.token(u, "student"), "freq": f, "consent": c}
             for u, f, c in peers]
    return await start_python_client(nursery, "recording_peers.py", daemon.ws_url,
                                     json.dumps(specs))


async def until(peers: NodeClient, log: list[dict[str, Any]],
                want: set[tuple[str, str]]) -> None:
    """Read the peers' lines until each (user, event) in `want` was seen (30 s at most)."""
    with trio.move_on_after(30):
        while not want <= {(e["user"], e["event"]) for e in log}:
            log.append(await peers.next())
    missing = want - {(e["user"], e["event"]) for e in log}
    assert not missing, (missing, log)


async def stop(peers: NodeClient, log: list[dict[str, Any]]) -> None:
    """Everyone left (a leaver gets no `session-ended`): stop the peers, keep their lines."""
    peers.process.terminate()
    with trio.fail_after(10):
        try:
            while True:
                log.append(await peers.next())
        except EOFError:
            pass
        await peers.wait()


async def recorded_events(daemon: RunningDaemon) -> list[dict[str, Any]]:
    service = service_for(daemon.daemon.services)
    assert service is not None and service.bus is not None
    entries = await service.bus.entries("conversation.events")
    return [e for e in entries if e["type"] == "session.recorded"]


async def wait_recorded(daemon: RunningDaemon) -> dict[str, Any]:
    """The one `session.recorded` on the bus (the relay publishes it after the upload)."""
    with trio.fail_after(30):
        while not await recorded_events(daemon):  # noqa: ASYNC110 - polling the bus
            await trio.sleep(0.1)
    await trio.sleep(0.5)  # a duplicate, if any, would be published by now
    events = await recorded_events(daemon)
    assert len(events) == 1, events
    payload: dict[str, Any] = orjson.loads(events[0]["payload"])
    return payload


def spectrum(audio: Any, begin: float, end: float) -> dict[float, float]:
    return tone_levels(audio[int(begin * RATE):int(end * RATE)], TONES)


async def test_two_of_three_consent_and_only_their_tones_are_recorded(
        nursery: trio.Nursery, tmp_path: Path, moto_s3: MotoS3) -> None:
    await two_of_three(nursery, tmp_path, moto_s3, {})


# Stopping a daemon on Redis leaves an unawaited `Redis.execute_command`
# coroutine behind (outside the recording code, reported); it is collected
# here, inside this test, instead of failing whichever test runs next.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_two_of_three_on_postgres_and_redis(
        tmp_path: Path, moto_s3: MotoS3, pg_dsn: str, redis_prefix: str) -> None:
    import gc

    async with trio.open_nursery() as nursery:
        await two_of_three(nursery, tmp_path, moto_s3, production(pg_dsn, redis_prefix))
    gc.collect()


async def two_of_three(nursery: trio.Nursery, tmp_path: Path, moto_s3: MotoS3,
                       stores: dict[str, Any]) -> None:
    """Marie (440 Hz) and Jean (660 Hz) consent, Pierre (880 Hz) does not."""
    daemon = await start(nursery, recording_config(tmp_path / "state", moto_s3,
                                                   stores=stores))
    session = Session(daemon)
    await session.open(["marie", "jean", "pierre"])
    peers = await start_peers(nursery, daemon, [("marie", 440, True), ("jean", 660, True),
                                                ("pierre", 880, False)])
    log: list[dict[str, Any]] = []
    await session.join("marie", True)
    await session.join("pierre", False)
    active_at = trio.current_time()  # min 2 reached: Active, the recorder starts
    await session.join("jean", True)
    await until(peers, log, {("marie", "connected"), ("jean", "connected"),
                             ("pierre", "refused")})
    refusal = next(e for e in log if e["user"] == "pierre" and e["event"] == "refused")
    assert refusal["reply"]["data"]["code"] in ("forbidden", "not_found")
    await trio.sleep(6)
    for user in ("marie", "jean", "pierre"):
        await session.leave(user)
    ended_at = trio.current_time()
    await stop(peers, log)
    assert not any(e["event"] == "requested" for e in log if e["user"] == "pierre")

    payload = await wait_recorded(daemon)
    key = f"recordings/{session.session_id}.ogg"
    assert moto_s3.keys() == [key]
    assert payload["recordingUrl"] == f"{moto_s3.endpoint_url}/{moto_s3.bucket}/{key}"
    assert payload["sessionId"] == session.session_id
    assert sorted(payload["participants"]) == ["jean", "marie"]
    expected = ended_at - active_at
    assert abs(payload["durationSeconds"] - expected) <= 0.1 * expected, (payload, expected)
    assert (await session.view())["recordingUrl"] == payload["recordingUrl"]

    audio = decode(moto_s3.get(key))
    assert abs(len(audio) / RATE - expected) <= 0.1 * expected
    levels = spectrum(audio, 0, len(audio) / RATE)
    assert levels[440] > 0.3 and levels[660] > 0.3, levels
    assert levels[880] < 0.02, levels
    # Nothing is left behind once uploaded.
    assert list((tmp_path / "state" / "recordings").iterdir()) == []
    daemon.daemon.request_shutdown()


async def test_consent_withdrawn_mid_session_stops_that_tone(
        nursery: trio.Nursery, tmp_path: Path, moto_s3: MotoS3) -> None:
    daemon = await start(nursery, recording_config(tmp_path / "state", moto_s3))
    session = Session(daemon)
    await session.open(["marie", "jean"])
    peers = await start_peers(nursery, daemon, [("marie", 440, True), ("jean", 660, True)])
    log: list[dict[str, Any]] = []
    await session.join("marie", True)
    await session.join("jean", True)
    active_at = trio.current_time()
    await until(peers, log, {("marie", "connected"), ("jean", "connected")})
    await trio.sleep(4)
    await session.consent("jean", False)
    withdrawn_at = trio.current_time() - active_at
    await until(peers, log, {("jean", "stopped")})
    await trio.sleep(4)
    await session.leave("marie")
    await session.leave("jean")
    await stop(peers, log)

    payload = await wait_recorded(daemon)
    assert sorted(payload["participants"]) == ["jean", "marie"]  # jean, before withdrawing
    audio = decode(moto_s3.get(f"recordings/{session.session_id}.ogg"))
    before = spectrum(audio, withdrawn_at - 2.5, withdrawn_at - 0.5)
    after = spectrum(audio, withdrawn_at + 0.5, len(audio) / RATE - 0.3)
    assert before[440] > 0.3 and before[660] > 0.3, before
    assert after[440] > 0.3 and after[660] < 0.02, after
    daemon.daemon.request_shutdown()


async def test_no_consent_no_recorder_no_file_no_event(
        nursery: trio.Nursery, tmp_path: Path, moto_s3: MotoS3) -> None:
    daemon = await start(nursery, recording_config(tmp_path / "state", moto_s3))
    session = Session(daemon)
    await session.open(["marie", "jean"])
    peers = await start_peers(nursery, daemon, [("marie", 440, False), ("jean", 660, False)])
    log: list[dict[str, Any]] = []
    await session.join("marie", False)
    await session.join("jean", False)
    await until(peers, log, {("marie", "refused"), ("jean", "refused")})
    service = service_for(daemon.daemon.services)
    assert service is not None
    assert service.recording.recorders == {}  # type: ignore[attr-defined]
    await trio.sleep(2)
    for user in ("marie", "jean"):
        await session.leave(user)
    await stop(peers, log)
    assert not any(e["event"] == "requested" for e in log)
    await trio.sleep(1)
    assert await recorded_events(daemon) == []
    assert moto_s3.keys() == []
    folder = tmp_path / "state" / "recordings"
    assert not folder.exists() or list(folder.iterdir()) == []
    assert (await session.view())["recordingUrl"] is None
    daemon.daemon.request_shutdown()


async def test_an_upload_cut_by_a_crash_is_done_after_restart_and_published_once(
        tmp_path: Path, moto_s3: MotoS3) -> None:
    import shutil
    import socket

    state = tmp_path / "state"
    folder = state / "recordings"
    with socket.socket() as sock:  # the object store is down during the first run
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with trio.open_nursery() as first:
        daemon = await start(first, recording_config(state, moto_s3, endpoint_url=dead))
        session = Session(daemon)
        await session.open(["marie", "jean"])
        peers = await start_peers(first, daemon, [("marie", 440, True), ("jean", 660, False)])
        log: list[dict[str, Any]] = []
        await session.join("marie", True)
        await session.join("jean", False)
        await until(peers, log, {("marie", "connected")})
        await trio.sleep(3)
        await session.leave("marie")
        await session.leave("jean")
        await stop(peers, log)
        with trio.fail_after(10):
            while not list(folder.glob("*.pending.json")):  # noqa: ASYNC110 - on disk
                await trio.sleep(0.1)
        await trio.sleep(1)  # the uploader is retrying against the dead endpoint
        assert await recorded_events(daemon) == []
        assert (await session.view())["recordingUrl"] is None
        saved = tmp_path / "saved"
        shutil.copytree(folder, saved)
        first.cancel_scope.cancel()  # the daemon dies with the upload pending
    assert moto_s3.keys() == []

    async with trio.open_nursery() as second:
        daemon = await start(second, recording_config(state, moto_s3))
        session.daemon = daemon
        payload = await wait_recorded(daemon)
        key = f"recordings/{session.session_id}.ogg"
        assert moto_s3.keys() == [key]
        assert payload["participants"] == ["marie"]
        assert (await session.view())["recordingUrl"] == payload["recordingUrl"]
        levels = spectrum(decode(moto_s3.get(key)), 0.5, payload["durationSeconds"])
        assert levels[440] > 0.3 and levels[660] < 0.02, levels
        assert list(folder.iterdir()) == []
        second.cancel_scope.cancel()

    # A crash after the database commit but before the marker was removed: the
    # next run uploads again (harmless) and publishes nothing new.
    for item in saved.iterdir():
        shutil.copy(item, folder / item.name)
    async with trio.open_nursery() as third:
        daemon = await start(third, recording_config(state, moto_s3))
        service = service_for(daemon.daemon.services)
        assert service is not None
        with trio.fail_after(30):
            while list(folder.iterdir()):  # noqa: ASYNC110 - on disk
                await trio.sleep(0.1)
        await trio.sleep(0.5)
        assert len(await recorded_events(daemon)) == 1
        assert service.recording.uploaded == 1  # type: ignore[attr-defined]
        third.cancel_scope.cancel()


class DaemonProcessView:
    """What `Session` needs of a daemon, for one running as a separate process."""

    def __init__(self, config: Config, line: dict[str, str]) -> None:
        from pratico_daemon.auth import Authenticator

        self.auth = Authenticator.from_config(config)
        self.url = line["http"]
        self.ws_url = line["ws"]

    def token(self, sub: str, role: str = "student") -> str:
        return self.auth.mint(sub, role, "org1", 3600)


async def test_kill_9_with_the_upload_pending_then_restart(
        nursery: trio.Nursery, tmp_path: Path, moto_s3: MotoS3) -> None:
    import signal
    import socket

    from tests.support.process import write_config

    state = tmp_path / "state"
    folder = state / "recordings"
    with socket.socket() as sock:  # the object store is down while the first daemon runs
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config_path = write_config(tmp_path / "daemon.toml", state,
                               recording=moto_s3.mapping(endpoint_url=dead))
    process = await start_python_client(nursery, "recording_daemon.py", str(config_path))
    with trio.fail_after(30):
        first = DaemonProcessView(recording_config(state, moto_s3), await process.next())
    session = Session(first)  # type: ignore[arg-type]
    await session.open(["marie", "jean"])
    peers = await start_peers(nursery, first, [("marie", 440, True),  # type: ignore[arg-type]
                                               ("jean", 660, False)])
    log: list[dict[str, Any]] = []
    await session.join("marie", True)
    await session.join("jean", False)
    await until(peers, log, {("marie", "connected")})
    await trio.sleep(3)
    await session.leave("marie")
    await session.leave("jean")
    await stop(peers, log)
    with trio.fail_after(10):
        while not list(folder.glob("*.pending.json")):  # noqa: ASYNC110 - on disk
            await trio.sleep(0.1)
    await trio.sleep(0.5)  # the uploader is retrying against the dead endpoint
    assert (await session.view())["recordingUrl"] is None
    process.process.send_signal(signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL
    assert moto_s3.keys() == []

    second = await start(nursery, recording_config(state, moto_s3))
    session.daemon = second
    payload = await wait_recorded(second)
    key = f"recordings/{session.session_id}.ogg"
    assert moto_s3.keys() == [key]
    assert payload["participants"] == ["marie"]
    assert (await session.view())["recordingUrl"] == payload["recordingUrl"]
    levels = spectrum(decode(moto_s3.get(key)), 0.5, payload["durationSeconds"])
    assert levels[440] > 0.3 and levels[660] < 0.02, levels
    assert list(folder.iterdir()) == []
    second.daemon.request_shutdown()


async def test_a_daemon_stopped_mid_session_keeps_the_part_and_joins_it_at_the_end(
        tmp_path: Path, moto_s3: MotoS3) -> None:
    state = tmp_path / "state"
    folder = state / "recordings"
    async with trio.open_nursery() as nursery:
        daemon = await start(nursery, recording_config(state, moto_s3))
        session = Session(daemon)
        await session.open(["marie", "jean"])
        peers = await start_peers(nursery, daemon, [("marie", 440, True), ("jean", 660, True)])
        log: list[dict[str, Any]] = []
        reply = await session.join("marie", True)
        reply = await session.join("jean", True)
        assert {p["userId"] for p in reply["participants"]} == {"marie", "jean"}  # no recorder
        first_at = trio.current_time()
        await until(peers, log, {("marie", "connected"), ("jean", "connected")})
        await trio.sleep(2)
        daemon.daemon.request_shutdown()  # SIGTERM: the session is still Active
        await stop(peers, log)
    first_part = trio.current_time() - first_at
    parts = sorted(p.name for p in folder.iterdir())
    assert len(parts) == 2 and parts[0].endswith(".json") and ".part-" in parts[1], parts
    assert moto_s3.keys() == []

    async with trio.open_nursery() as nursery:
        daemon = await start(nursery, recording_config(state, moto_s3))
        session.daemon = daemon
        service = service_for(daemon.daemon.services)
        assert service is not None
        recorders = service.recording.recorders  # type: ignore[attr-defined]
        with trio.fail_after(10):  # the scheduler reopens the Active session's room
            while session.session_id not in recorders:  # noqa: ASYNC110 - polling
                await trio.sleep(0.1)
        assert await recorded_events(daemon) == []
        # Only jean comes back: the second part has his tone alone.
        peers = await start_peers(nursery, daemon, [("jean", 660, True)])
        log = []
        await until(peers, log, {("jean", "connected")})
        second_at = trio.current_time()
        await trio.sleep(2)
        await session.leave("marie")
        await session.leave("jean")
        second_part = trio.current_time() - second_at
        await stop(peers, log)
        payload = await wait_recorded(daemon)
        assert payload["participants"] == ["jean", "marie"]
        audio = decode(moto_s3.get(f"recordings/{session.session_id}.ogg"))
        seconds = len(audio) / RATE
        assert abs(payload["durationSeconds"] - seconds) < 0.5
        assert seconds > first_part and seconds >= second_part + 2, (seconds, first_part)
        assert seconds <= 1.1 * (first_part + second_part) + 6  # + ICE before the 2nd tone
        head = spectrum(audio, 0.3, first_part - 0.5)
        tail = spectrum(audio, seconds - 1.8, seconds - 0.3)
        assert head[440] > 0.3 and head[660] > 0.3, head
        assert tail[660] > 0.3 and tail[440] < 0.02, tail
        assert list(folder.iterdir()) == []
        daemon.daemon.request_shutdown()


async def test_closing_a_session_never_hangs_even_with_frozen_peers(
        nursery: trio.Nursery, tmp_path: Path, moto_s3: MotoS3) -> None:
    import signal

    daemon = await start(nursery, recording_config(tmp_path / "state", moto_s3))
    session = Session(daemon)
    await session.open(["marie", "jean"])
    peers = await start_peers(nursery, daemon, [("marie", 440, True), ("jean", 660, True)])
    log: list[dict[str, Any]] = []
    await session.join("marie", True)
    await session.join("jean", True)
    await until(peers, log, {("marie", "connected"), ("jean", "connected")})
    await trio.sleep(1)
    peers.process.send_signal(signal.SIGSTOP)  # the peers stop answering anything
    try:
        started = trio.current_time()
        await session.leave("marie")
        await session.leave("jean")
        payload = await wait_recorded(daemon)
        # Connections closed (or given up on) within the recorder's 5 s bound.
        assert trio.current_time() - started < 12
        assert sorted(payload["participants"]) == ["jean", "marie"]
    finally:
        peers.process.send_signal(signal.SIGCONT)
        await stop(peers, log)
    daemon.daemon.request_shutdown()
