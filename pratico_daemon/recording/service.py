"""Recording wired to conversation sessions: when to record, signalling, upload, the event.

Theory of operation
-------------------
*When.* `sync(room)` reconciles a session's recording with its Room state
(status and participants' `recordingConsent`, read through a room command,
so it sees exactly what the room's only writer decided). It is called after
every change the conversation service mirrors into a session room (join,
leave, media/consent, end, a connection attaching, a room opened on
restart). The rules (seed 003, "Flux d'Enregistrement"):

- the session is ACTIVE and at least one participant consents, and no
  recorder runs → start a `SessionRecorder` in the room's nursery;
- a consenting participant whose connection has not been asked yet gets
  `record-request {sessionId}`: "offer me your audio";
- a participant who is captured but no longer consents (PATCH
  `recordingConsent: false`, or left, or was deleted) is dropped at once
  (the mixer ignores them from that instant) and gets `record-stop`;
- nobody consents → no recorder, no file, no event.

*Signalling* (client → server on `/conversation`, both framings):
`record-offer {sdp}` — the participant offers its audio (sendonly); the
server replies with the event `record-answer {sessionId, sdp}` (the answer
SDP carries the server's candidates: aiortc gathers before answering).
`record-ice-candidate {candidate}` — trickled candidates, both ways (the
server accepts them; it has none to trickle). The recorder is addressed
implicitly: there is one per session, and it is never a participant.

*After the end.* The room's end cancels the recorder, which finishes the
file and calls `_finished`: a marker `<session>.pending.json` is written
next to the file (atomically: temp file, fsync, rename), and the uploader
is poked. The uploader (`run`, a task owned by the conversation
namespace) uploads each pending file through the `BlobStore`, then, in ONE
database transaction, sets `sessions.recording_url` and writes
`session.recorded {sessionId, recordingUrl, durationSeconds, participants}`
to the outbox — only if the URL was not set yet — then deletes the marker
and the file. A crash anywhere leaves the marker: after a restart the
upload is done again (a PUT replaces) and the transaction sees the URL
already set, so the event exists once, and never before the object does.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import trio

from pratico_daemon import logs
from pratico_daemon.errors import AppError
from pratico_daemon.recording.blobstore import BlobStore, BlobStoreError, S3BlobStore
from pratico_daemon.recording.mixer import CONTENT_TYPE
from pratico_daemon.recording.recorder import FinishedRecording, SessionRecorder
from pratico_daemon.session.validate import Field, fields
from pratico_daemon.storage.protocols import StorageUnavailable

log = logs.get("recording")

MAX_CANDIDATE_BYTES = 4 * 1024
PENDING_SUFFIX = ".pending.json"


class RecordingService:
    def __init__(self, config: Any, conversation: Any, *, blobstore: BlobStore | None = None,
                 retry_s: float = 5.0, idle_s: float = 60.0) -> None:
        self.config = config
        self.conversation = conversation
        self.folder: Path = config.state_dir() / "recordings"
        self.blobstore: BlobStore = blobstore or S3BlobStore(config.recording)
        self.key_prefix = config.recording.key_prefix
        self.ice_servers = list(config.conversation.ice_servers)
        self.max_sdp_bytes = config.limits.max_sdp_bytes
        self.retry_s = retry_s
        self.idle_s = idle_s
        self.recorders: dict[str, SessionRecorder] = {}
        self._snapshots = itertools.count()
        self._latest: dict[str, int] = {}
        self.uploaded = 0
        self._wake = trio.Event()

    def __repr__(self) -> str:
        return f"<RecordingService {len(self.recorders)} recording>"

    # -- when to record -------------------------------------------------------------------

    async def sync(self, room: Any) -> None:
        """Make the session's recording match its room's state (see the module docstring).

        Never raises: it runs after joins, leaves and consent changes, and a
        recording that cannot start (disk full, a media library failing) must
        not turn those into errors; it is logged instead.
        """
        try:
            await self._sync(room)
        except Exception:
            log.exception("recording: could not sync session %s",
                          getattr(room, "room_id", "?"))

    async def _sync(self, room: Any) -> None:
        from pratico_daemon.conversation.lifecycle import SessionStatus

        if room is None or getattr(room, "kind", None) != "conversation":
            return
        directory = self.conversation.directory

        def snapshot(r: Any) -> tuple[int, Any, set[str], dict[str, list[Any]]]:
            # Numbered in the room's order: two syncs whose replies come back out
            # of order must not let the older one re-admit a withdrawn consent.
            seq = next(self._snapshots)
            live = r.state
            consenting = {uid for uid, p in live.participants.items()
                          if p.consent and not p.recorder}
            # The room's members, not the directory: a connection is attached to
            # the room (inside `connect`) before the gateway lists it.
            clients: dict[str, list[Any]] = {}
            for member in r.members.values():
                uid = getattr(getattr(member, "identity", None), "user_id", None)
                if isinstance(uid, str) and uid in consenting:
                    clients.setdefault(uid, []).append(member)
            return seq, live.status, consenting, clients

        try:
            seq, status, consenting, clients = await room.call(snapshot)
        except AppError:  # the room has ended: its recorder is finishing by itself
            return
        session_id = room.room_id
        if seq < self._latest.get(session_id, -1):
            return  # a newer sync of this session already acted
        if session_id not in self._latest:
            room.on_end.append(lambda r: self._latest.pop(r.room_id, None))
        self._latest[session_id] = seq
        recorder = self.recorders.get(session_id)
        if recorder is not None:
            recorder.consenting = consenting
        if status is SessionStatus.ACTIVE and consenting and recorder is None:
            recorder = SessionRecorder(session_id, self.folder, self.ice_servers,
                                       lambda done: self._finished(done, room))
            recorder.consenting = consenting
            self.recorders[session_id] = recorder
            try:
                assert room.nursery is not None
                await room.nursery.start(self._run_recorder, recorder)
            except (RuntimeError, AssertionError):  # the room closed meanwhile
                self.recorders.pop(session_id, None)
                return
            log.info("recording session %s", session_id)
        if recorder is None or not recorder.running:
            return
        for user_id in list(recorder.peers):
            if user_id not in consenting:
                recorder.stop_participant(user_id)
                for client in directory.of_user(user_id):
                    client.emit("record-stop", {"sessionId": session_id})
        for user_id in consenting:
            if user_id in recorder.peers:
                continue
            for client in clients.get(user_id, []):
                if client.sid not in recorder.requested:
                    recorder.requested.add(client.sid)
                    client.emit("record-request", {"sessionId": session_id})

    async def _run_recorder(self, recorder: SessionRecorder, *,
                            task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await recorder.run(task_status=task_status)
        finally:
            if self.recorders.get(recorder.session_id) is recorder:
                del self.recorders[recorder.session_id]

    # -- signalling -----------------------------------------------------------------------

    def _recorder_of(self, client: Any) -> tuple[str, SessionRecorder]:
        user_id = client.identity.user_id
        if user_id is None:
            raise AppError("unauthorized", "a token is required")
        session_id = self.conversation.live_by_user.get(user_id)
        recorder = self.recorders.get(session_id) if session_id else None
        if recorder is None or not recorder.running:
            raise AppError("not_found", "no recording in progress in your session")
        if user_id not in recorder.consenting:
            raise AppError("forbidden", "you have not consented to the recording")
        return user_id, recorder

    async def record_offer(self, client: Any, payload: dict[str, Any]) -> dict[str, Any]:
        (sdp,) = fields(payload, sdp=Field((str,), min_len=1))
        if len(sdp.encode()) > self.max_sdp_bytes:
            raise AppError("payload_too_large", f"sdp: larger than {self.max_sdp_bytes} bytes")
        user_id, recorder = self._recorder_of(client)
        answer = await recorder.accept_offer(user_id, sdp)
        client.emit("record-answer", {"sessionId": recorder.session_id, "sdp": answer})
        return {"sessionId": recorder.session_id}

    async def record_ice_candidate(self, client: Any, payload: dict[str, Any]) -> dict[str, Any]:
        (candidate,) = fields(payload, candidate=Field((str, dict)))
        if len(orjson.dumps(candidate)) > MAX_CANDIDATE_BYTES:
            raise AppError("payload_too_large",
                           f"candidate: larger than {MAX_CANDIDATE_BYTES} bytes")
        user_id, recorder = self._recorder_of(client)
        await recorder.add_candidate(user_id, candidate)
        return {}

    def register_events(self, namespace: Any) -> None:
        namespace.events["record-offer"] = self.record_offer
        namespace.events["record-ice-candidate"] = self.record_ice_candidate

    # -- after the end: the pending marker, the upload, the event -------------------------

    def _finished(self, done: FinishedRecording, room: Any) -> None:
        """The recorder stopped: make the upload durable (marker), wake the uploader.

        A recorder stopped while its session goes on (the daemon is stopping)
        keeps its file as a *part* (`<session>.part-<ns>.ogg` with a `.json`
        saying who is in it and how long it is) and publishes nothing. When the
        session ends, its parts and the last file make one pending upload; the
        uploader joins them (`mixer.concatenate`) before uploading.
        """
        from pratico_daemon.conversation.lifecycle import SessionStatus

        if getattr(room.state, "status", None) is not SessionStatus.ENDED:
            if done.path is None:
                return
            part = done.path.with_name(f"{done.session_id}.part-{time.time_ns()}.ogg")
            _fsync_file(done.path)
            _write_atomically(part.with_suffix(".json"), {
                "durationSeconds": done.duration_s, "participants": list(done.participants)})
            os.replace(done.path, part)
            _fsync_dir(self.folder)
            log.warning("recording of %s interrupted before the session ended; part kept as %s",
                        done.session_id, part.name)
            return
        files: list[str] = []
        duration = 0.0
        participants: set[str] = set()
        for part in sorted(self.folder.glob(f"{done.session_id}.part-*.ogg")):
            files.append(part.name)
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                meta = orjson.loads(part.with_suffix(".json").read_bytes())
                duration += float(meta.get("durationSeconds", 0.0))
                participants.update(meta.get("participants", []))
        if done.path is not None:
            _fsync_file(done.path)  # the file is durable before its marker
            files.append(done.path.name)
            duration += done.duration_s
            participants.update(done.participants)
        if not files:
            return
        marker = {"sessionId": done.session_id, "files": files,
                  "key": f"{self.key_prefix}{done.session_id}.ogg",
                  "durationSeconds": round(duration, 2), "participants": sorted(participants)}
        _write_atomically(self.folder / f"{done.session_id}{PENDING_SUFFIX}", marker)
        _fsync_dir(self.folder)
        log.info("recording of %s finished: %.1fs in %d part(s), %s", done.session_id,
                 duration, len(files), ", ".join(sorted(participants)))
        self._wake.set()

    def pending(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob(f"*{PENDING_SUFFIX}"))

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The uploader: pending recordings (this run's and a crashed run's), until cancelled."""
        task_status.started()
        while True:
            self._wake = trio.Event()
            failed = False
            for marker in self.pending():
                try:
                    await self.upload(marker)
                except (BlobStoreError, StorageUnavailable, AppError) as exc:
                    log.warning("recording upload of %s failed: %s (retry in %.0fs)",
                                marker.name, exc, self.retry_s)
                    failed = True
                except orjson.JSONDecodeError:
                    log.error("recording marker %s is unreadable; set aside", marker.name)
                    marker.rename(marker.with_suffix(".corrupt"))
                except Exception:  # a bug must not stop the uploads of other sessions
                    log.exception("recording upload of %s failed", marker.name)
                    failed = True
            with trio.move_on_after(self.retry_s if failed else self.idle_s):
                await self._wake.wait()

    async def upload(self, marker_path: Path) -> str:
        """Upload one pending recording, then record its URL and event; return the URL."""
        marker = orjson.loads(await trio.Path(marker_path).read_bytes())
        files = marker.get("files") or [marker["file"]]
        key = marker["key"]
        repo = self.conversation.repo
        if repo is None:
            raise AppError("unavailable", "the conversation store is not open yet")
        if len(files) > 1:
            files = await self._join_parts(marker_path, marker, files)
        path = self.folder / files[0]
        if await trio.Path(path).exists():
            url = await self.blobstore.put_file(key, path, CONTENT_TYPE)
        elif await self.blobstore.exists(key):  # uploaded, then crashed before the cleanup
            url = self.blobstore.url_for(key)
        else:
            log.error("recording %s: neither the file nor the object exists; dropped", key)
            await trio.Path(marker_path).unlink()
            return ""
        await record_url(repo, marker["sessionId"], url, {
            "sessionId": marker["sessionId"], "recordingUrl": url,
            "durationSeconds": marker["durationSeconds"],
            "participants": marker["participants"]})
        self.conversation.poke()
        await trio.Path(marker_path).unlink()
        with contextlib.suppress(FileNotFoundError):
            await trio.Path(path).unlink()
        self.uploaded += 1
        log.info("recording of %s uploaded to %s", marker["sessionId"], url)
        return str(url)

    async def _join_parts(self, marker_path: Path, marker: dict[str, Any],
                          files: list[str]) -> list[str]:
        """Join a session's parts into one file; the marker then names only that file.

        Crash-safe in this order: the joined file is written and fsynced, the
        marker is replaced, and only then are the parts deleted.
        """
        from pratico_daemon.recording.mixer import concatenate

        joined = self.folder / f"{marker['sessionId']}.joined.ogg"
        paths = [self.folder / name for name in files]
        present = [p for p in paths if p.exists()]
        duration = await trio.to_thread.run_sync(concatenate, present, joined)
        await trio.to_thread.run_sync(_fsync_file, joined)
        marker = {**marker, "files": [joined.name], "durationSeconds": round(duration, 2)}
        await trio.to_thread.run_sync(_write_atomically, marker_path, marker)
        for path in paths:
            for leftover in (path, path.with_suffix(".json")):
                with contextlib.suppress(FileNotFoundError):
                    await trio.Path(leftover).unlink()
        return [joined.name]


def _fsync_file(path: Path) -> None:
    with path.open("rb") as written:
        os.fsync(written.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make renames in `folder` durable (best effort: not every filesystem allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomically(path: Path, value: Any) -> None:
    temp = path.with_name(path.name + ".tmp")
    with temp.open("wb") as out:
        out.write(orjson.dumps(value))
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)


async def record_url(repo: Any, session_id: str, url: str, payload: Mapping[str, Any]) -> bool:
    """Set the session's recording URL and write `session.recorded`, once (one transaction).

    Returns False when the URL was already set (an upload retried after a crash
    that followed the commit): no second event.
    """
    from pratico_daemon.conversation.repo import TOPIC, new_id

    async def unit(tx: Any) -> bool:
        row = await tx.fetchrow(
            "SELECT recording_url FROM sessions WHERE id = $1 FOR UPDATE", session_id)
        if row is None or row["recording_url"] is not None:
            return False
        await tx.execute("UPDATE sessions SET recording_url = $2 WHERE id = $1",
                         session_id, url)
        import datetime as dt

        await tx.execute(
            "INSERT INTO outbox (id, topic, type, payload, occurred_at) "
            "VALUES ($1, $2, $3, $4::jsonb, $5)",
            new_id(), TOPIC, "session.recorded", orjson.dumps(dict(payload)).decode(),
            dt.datetime.now(dt.UTC))
        return True

    return bool(await repo.db.transaction(unit))


# -- wiring (until the conversation service calls the hooks itself) -----------------------


def install(service: Any, namespace: Any, recording: RecordingService) -> None:
    """Attach `recording` to a conversation service and namespace.

    Registers `record-offer` / `record-ice-candidate` on the namespace; the
    conversation service then calls `recording.sync(room)` after each change to
    a session room, and the namespace runs the uploader (`recording.run`).
    """
    recording.register_events(namespace)
    namespace.recording = recording
    service.recording = recording
