"""The recorder participant: one aiortc peer connection per consenting participant.

Theory of operation
-------------------
A `SessionRecorder` exists while a session is recorded. It runs as one task
in the session Room's nursery (so it dies with the room, and with the
daemon), and owns:

- its own trio-asyncio loop (`storage.aio.open_loop`, with the
  cancellable-executor fix of STACK-NOTES.md: aiortc encodes and decodes in
  the executor, and without the fix `RTCPeerConnection.close()` hangs); every
  aiortc object of the session is created and closed inside it;
- the `Mixer`, ticked every 20 ms by the recorder task;
- one `RTCPeerConnection` per participant who offered their audio
  (`accept_offer`), configured with `conversation.ice_servers` (none by
  default: aiortc's default public STUN server is unreachable in many
  deployments and would only slow ICE gathering down). The server never
  sends media: it answers `recvonly`.

Each received audio track is read by a trio task in the recorder's nursery
(one bridge crossing for the track's whole life: an asyncio coroutine that
awaits `track.recv()` in a loop and hands each frame straight to the mixer,
which is synchronous and runs on the same thread). Frames of other kinds
(a client that also offered video) are read and dropped, because aiortc
queues unread frames without bound.

`stop_participant` (consent withdrawn, or they left) tells the mixer first
(nothing of theirs from that instant is mixed), then cancels the reader and
closes the connection in the background with a deadline.

When the recorder is cancelled (the session's room ended, or the daemon is
stopping) it closes every connection (shielded, at most `close_timeout_s`:
closing a session never hangs), finishes the file and hands the result to
`on_finished` (the uploader's queue). A recorder that never received a frame
leaves no file (`path` None).

The recorder is not a participant: it has no row in `participants`, is
never counted toward occupancy or `maxParticipants`, and never appears in
`session-state` or `participant-joined`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio
import trio_asyncio

from pratico_daemon import logs
from pratico_daemon.errors import AppError
from pratico_daemon.recording.mixer import Mixer
from pratico_daemon.storage import aio

log = logs.get("recording")

TICK_S = 0.02
# ICE candidates that arrive before their offer wait here, a few per participant.
MAX_EARLY_CANDIDATES = 32


@attrs.frozen
class FinishedRecording:
    """A closed recording file, ready to upload."""

    session_id: str
    path: Path | None  # None: nobody's audio was captured (no file)
    duration_s: float
    participants: tuple[str, ...]


@attrs.define(eq=False)
class _Peer:
    user_id: str
    pc: Any = None
    scopes: list[trio.CancelScope] = attrs.Factory(list)
    dropped: bool = False
    early_candidates: list[Any] = attrs.Factory(list)
    frames: int = 0


def _ice_servers(servers: list[dict[str, Any]]) -> list[Any]:
    from aiortc import RTCIceServer

    out = []
    for server in servers:
        urls = server.get("urls") or server.get("url")
        if not urls:
            continue  # config validation is not ours; an entry without URLs is no server
        out.append(RTCIceServer(urls=urls, username=server.get("username"),
                                credential=server.get("credential")))
    return out


def parse_candidate(candidate: Any) -> Any:
    """An RTCIceCandidateInit (dict) or an `a=candidate:` string as an aiortc candidate."""
    from aiortc.sdp import candidate_from_sdp

    if isinstance(candidate, dict):
        text, mid, index = (candidate.get("candidate"), candidate.get("sdpMid"),
                            candidate.get("sdpMLineIndex"))
    else:
        text, mid, index = candidate, None, None
    if not isinstance(text, str) or not text.strip():
        return None  # end-of-candidates
    text = text.strip()
    if text.startswith("a="):
        text = text[2:]
    if text.startswith("candidate:"):
        text = text[len("candidate:"):]
    try:
        parsed = candidate_from_sdp(text)
    except Exception as exc:  # aiortc asserts, indexes and int()s its way through
        raise AppError("invalid_payload", f"candidate: not an ICE candidate ({exc!r})") from None
    parsed.sdpMid = mid if isinstance(mid, str) else "0"
    parsed.sdpMLineIndex = index if isinstance(index, int) else 0
    return parsed


class SessionRecorder:
    def __init__(self, session_id: str, folder: Path, ice_servers: list[dict[str, Any]],
                 on_finished: Callable[[FinishedRecording], None], *,
                 close_timeout_s: float = 5.0, negotiate_timeout_s: float = 15.0) -> None:
        self.session_id = session_id
        self.path = folder / f"{session_id}.ogg"
        self.ice_servers = ice_servers
        self.on_finished = on_finished
        self.close_timeout_s = close_timeout_s
        self.negotiate_timeout_s = negotiate_timeout_s
        self.peers: dict[str, _Peer] = {}
        self.captured: set[str] = set()
        self.requested: set[str] = set()  # sids sent `record-request`
        # Who consents now, as the room last said (set by RecordingService.sync):
        # checked before and after a negotiation, so a withdrawal racing an
        # offer never ends up captured.
        self.consenting: set[str] = set()
        self.mixer: Mixer | None = None
        self.loop: Any = None
        self.nursery: trio.Nursery | None = None
        self.finished: FinishedRecording | None = None
        self.done = trio.Event()

    def __repr__(self) -> str:
        return f"<SessionRecorder {self.session_id} {len(self.peers)} peers>"

    @property
    def running(self) -> bool:
        return self.nursery is not None and not self.done.is_set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Record until cancelled, then finish the file (see the module docstring)."""
        try:
            async with aio.open_loop() as loop:
                self.loop = loop
                self.mixer = Mixer(self.path, trio.current_time())
                try:
                    async with trio.open_nursery() as nursery:
                        self.nursery = nursery
                        task_status.started(self)
                        while True:
                            await trio.sleep(TICK_S)
                            self.mixer.advance(trio.current_time())
                finally:
                    # The recording ends now, not once the connections are closed
                    # (up to close_timeout_s later): nothing after this is mixed.
                    stopped_at = trio.current_time()
                    with trio.CancelScope(shield=True):
                        await self._close_all()
                    self._finish(stopped_at)
        finally:
            self.done.set()

    async def _close_all(self) -> None:
        peers = list(self.peers.values())
        self.peers.clear()
        with trio.move_on_after(self.close_timeout_s) as scope:
            async with trio.open_nursery() as nursery:
                for peer in peers:
                    peer.dropped = True
                    for reader in peer.scopes:
                        reader.cancel()
                    if peer.pc is not None:
                        nursery.start_soon(self._close_pc, peer.pc)
        if scope.cancelled_caught:
            log.warning("recorder %s: peer connections did not close within %.0fs",
                        self.session_id, self.close_timeout_s)

    async def _aio(self, coro: Any) -> Any:
        """Run an asyncio coroutine on the recorder's loop, from any trio task.

        trio-asyncio finds "the running loop" in the *trio task's* context, and
        asyncio objects created by the coroutine (aioice's datagram transports,
        whose reader tasks copy that context) keep calling
        `asyncio.get_running_loop()` later. A handler task has no loop in its
        context, so it is set for the crossing: the asyncio task copies it.
        """
        token = trio_asyncio.current_loop.set(self.loop)
        try:
            return await self.loop.run_aio_coroutine(coro)
        finally:
            trio_asyncio.current_loop.reset(token)

    async def _close_pc(self, pc: Any) -> None:
        try:
            await self._aio(pc.close())
        except Exception:
            log.exception("recorder %s: closing a peer connection failed", self.session_id)

    def _finish(self, stopped_at: float) -> None:
        mixer = self.mixer
        if mixer is None:
            return
        if not self.captured:
            mixer.abort()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.finished = FinishedRecording(self.session_id, None, 0.0, ())
        else:
            duration = mixer.close(stopped_at)
            self.finished = FinishedRecording(self.session_id, self.path, round(duration, 2),
                                              tuple(sorted(self.captured)))
        try:
            self.on_finished(self.finished)
        except Exception:
            log.exception("recorder %s: handing the file over failed", self.session_id)

    # -- participants ---------------------------------------------------------------------

    async def accept_offer(self, user_id: str, sdp: str) -> str:
        """Answer `user_id`'s offer of their audio; a second offer replaces the first."""
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        if not self.running or self.mixer is None:
            raise AppError("not_found", "no recording in progress")
        if user_id not in self.consenting:
            raise AppError("forbidden", "you have not consented to the recording")
        old = self.peers.get(user_id)
        if old is not None:
            self._drop_peer(old)
        peer = self.peers[user_id] = _Peer(user_id, early_candidates=(
            old.early_candidates if old is not None and old.pc is None else []))
        self.mixer.admit(user_id)
        config = RTCConfiguration(iceServers=_ice_servers(self.ice_servers))

        async def negotiate() -> tuple[Any, str]:
            pc = RTCPeerConnection(config)
            peer.pc = pc

            @pc.on("track")
            def on_track(track: Any) -> None:
                if self.nursery is not None and self.peers.get(user_id) is peer:
                    self.nursery.start_soon(self._read, peer, track)

            await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
            if not any(t.kind == "audio" for t in pc.getTransceivers()):
                raise ValueError("the offer has no audio")
            for candidate in peer.early_candidates:
                with contextlib.suppress(Exception):
                    await pc.addIceCandidate(candidate)
            peer.early_candidates.clear()
            await pc.setLocalDescription(await pc.createAnswer())
            return pc, pc.localDescription.sdp

        try:
            with trio.fail_after(self.negotiate_timeout_s):
                _, answer = await self._aio(negotiate())
        except trio.TooSlowError:
            self._drop_peer(peer)
            raise AppError("unavailable", "the recorder could not answer in time") from None
        except Exception as exc:  # aiortc's many reactions to a bad SDP
            self._drop_peer(peer)
            raise AppError("invalid_payload", f"sdp: not a usable offer ({exc!r})") from None
        if self.peers.get(user_id) is not peer or user_id not in self.consenting:
            self.stop_participant(user_id)  # consent withdrawn during the negotiation
            raise AppError("forbidden", "you have not consented to the recording")
        return str(answer)

    async def add_candidate(self, user_id: str, candidate: Any) -> None:
        parsed = parse_candidate(candidate)
        peer = self.peers.get(user_id)
        if parsed is None:
            return
        if peer is None:
            peer = self.peers[user_id] = _Peer(user_id)
        if peer.pc is None:
            if len(peer.early_candidates) >= MAX_EARLY_CANDIDATES:
                raise AppError("rate_limited", "too many candidates before the offer")
            peer.early_candidates.append(parsed)
            return
        with contextlib.suppress(Exception):  # duplicate of one in the SDP, or late
            await self._aio(peer.pc.addIceCandidate(parsed))

    def stop_participant(self, user_id: str) -> bool:
        """Capture nothing more of `user_id` from now on; True if they were being captured."""
        if self.mixer is not None:
            self.mixer.remove(user_id, trio.current_time())
        peer = self.peers.pop(user_id, None)
        if peer is None:
            return False
        self._drop_peer(peer)
        return True

    def _drop_peer(self, peer: _Peer) -> None:
        peer.dropped = True
        for reader in peer.scopes:
            reader.cancel()
        if self.peers.get(peer.user_id) is peer:
            del self.peers[peer.user_id]
        if peer.pc is not None and self.nursery is not None:
            pc, peer.pc = peer.pc, None

            async def close() -> None:
                with trio.move_on_after(self.close_timeout_s):
                    await self._close_pc(pc)

            self.nursery.start_soon(close)

    async def _read(self, peer: _Peer, track: Any) -> None:
        """Feed one received track to the mixer until it ends or the peer is dropped."""
        from aiortc.mediastreams import MediaStreamError

        mixer = self.mixer
        assert mixer is not None
        audio = track.kind == "audio"
        user_id = peer.user_id

        async def pump() -> None:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                if audio and self.peers.get(user_id) is peer:
                    mixer.push(user_id, frame, trio.current_time())
                    peer.frames += 1
                    self.captured.add(user_id)

        scope = trio.CancelScope()
        peer.scopes.append(scope)
        if peer.dropped:
            return
        with scope:
            await self._aio(pump())
