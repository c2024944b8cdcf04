"""When the recorder runs and whom it asks, on the in-process conversation test bed.

No media here (the e2e tests send real audio): this walks consent given,
refused, given late and withdrawn, a late joiner, a second connection, and
the refusals of `record-offer`, and checks that a session nobody's audio
reached leaves no file and no event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from pratico_daemon.errors import AppError
from pratico_daemon.recording.blobstore import S3BlobStore
from pratico_daemon.recording.service import RecordingService, install
from tests.conversation.support import (
    Bed,
    backend,
    bed,
    make_slot,
    register,
    settle,
    sleep_until,
)
from tests.recording.conftest import MotoS3


@pytest.fixture
async def b(tmp_path: Path, moto_s3: MotoS3) -> AsyncIterator[Bed]:
    async with backend("embedded", tmp_path) as (repo, bus), bed(repo, bus, tmp_path) as b:
        recording = RecordingService(b.services.config, b.service,
                                     blobstore=S3BlobStore(moto_s3.section()))
        install(b.service, b.namespace, recording)
        yield b


def rec(b: Bed) -> RecordingService:
    return b.service.recording  # type: ignore[attr-defined,no-any-return]


async def join(b: Bed, slot: str, user: str, consent: bool) -> None:
    status, body = await b.rest("POST", "/sessions/join", user,
                                json={"timeSlotId": slot, "recordingConsent": consent})
    assert status == 200, body
    await settle()


async def consent(b: Bed, user: str, value: bool) -> None:
    status, body = await b.rest("PATCH", "/sessions/current/media", user,
                                json={"recordingConsent": value})
    assert status == 200, body
    await settle()


async def refused(b: Bed, client: Any, name: str, payload: dict[str, Any]) -> str:
    with pytest.raises(AppError) as caught:
        await b.namespace.events[name](client, payload)
    return caught.value.code


async def test_consent_decides_who_is_asked_and_who_may_offer(
        b: Bed, autojump_clock: Any, tmp_path: Path) -> None:
    slot = await make_slot(b, start=20)
    await register(b, slot, "marie", "jean", "pierre")
    marie, jean, pierre = [await b.connect(u) for u in ("marie", "jean", "pierre")]
    await sleep_until(20.1, b.service.clock)
    await join(b, slot, "marie", False)
    await join(b, slot, "jean", False)
    assert "session-started" in marie.names()
    # Active, but nobody consents: no recorder.
    assert rec(b).recorders == {}
    assert await refused(b, marie, "record-offer", {"sdp": "v=0"}) == "not_found"

    await consent(b, "marie", True)  # consent given during the session
    assert len(rec(b).recorders) == 1
    assert marie.of("record-request") == [{"sessionId": b.service.live_by_user["marie"]}]
    assert jean.of("record-request") == []
    assert await refused(b, jean, "record-offer", {"sdp": "v=0"}) == "forbidden"
    assert await refused(b, marie, "record-offer", {"sdp": "x" * 70_000}) == \
        "payload_too_large"
    assert await refused(b, marie, "record-offer", {"sdp": 5}) == "invalid_payload"
    assert await refused(b, marie, "record-offer", {"sdp": "v=0\r\nnot an offer\r\n"}) == \
        "invalid_payload"
    assert await refused(b, marie, "record-ice-candidate",
                         {"candidate": {"candidate": "candidate:nonsense"}}) == \
        "invalid_payload"

    await join(b, slot, "pierre", True)  # a late joiner who consents is asked too
    assert len(pierre.of("record-request")) == 1
    second = await b.connect("pierre")  # and so is a connection of theirs opened later
    await settle()
    assert len(second.of("record-request")) == 1
    assert len(pierre.of("record-request")) == 1  # once per connection
    assert len(marie.of("record-request")) == 1

    await consent(b, "marie", False)  # withdrawn: marie may no longer offer
    assert await refused(b, marie, "record-offer", {"sdp": "v=0"}) == "forbidden"
    assert "marie" not in next(iter(rec(b).recorders.values())).consenting

    for user in ("marie", "jean", "pierre"):
        status, _ = await b.rest("POST", f"/sessions/{b.service.live_by_user[user]}/leave",
                                 user)
        assert status == 200
    await settle()
    with trio.fail_after(10):
        while rec(b).recorders:  # noqa: ASYNC110 - the room's end stops the recorder
            await trio.sleep(0.05)
    # Nobody's audio reached the recorder: no file, no marker, no event.
    folder = tmp_path / "recordings"
    assert not folder.exists() or list(folder.iterdir()) == []
    assert "session.recorded" not in await b.published_types()


async def test_a_recording_that_cannot_start_never_breaks_the_session(
        b: Bed, autojump_clock: Any, tmp_path: Path) -> None:
    (tmp_path / "recordings").write_text("a file where the folder should be")
    slot = await make_slot(b, start=20)
    await register(b, slot, "marie", "jean")
    marie = await b.connect("marie")
    await sleep_until(20.1, b.service.clock)
    await join(b, slot, "marie", True)
    await join(b, slot, "jean", True)  # Active: the recorder fails to open its file
    assert "session-started" in marie.names()
    assert rec(b).recorders == {}
    assert marie.of("record-request") == []
    await consent(b, "jean", False)
    status, _ = await b.rest("POST", f"/sessions/{b.service.live_by_user['marie']}/leave",
                             "marie")
    assert status == 200
