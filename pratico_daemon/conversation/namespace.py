"""The `/conversation` namespace: who may connect, and WebRTC signalling.

Connections need a token (the gateway verified it into `client.identity`).
A connection of a user who is in a live session is attached to the session's
room and receives `session-state`; the other server events reach it through
the room (see `live.py`). Clients send `offer`, `answer` and `ice-candidate`
with `toUserId`; the server relays them to that participant of the caller's
own live session only, with `fromUserId` set from the caller's identity
(a `fromUserId` in the payload is overwritten, never trusted).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import trio

from pratico_daemon.conversation.service import NAMESPACE, ConversationService
from pratico_daemon.errors import AppError
from pratico_daemon.session.namespace import Client, Namespace
from pratico_daemon.session.validate import ID, Field, fields

# An RTCIceCandidateInit is ~200 bytes; 4 KiB leaves room for long ufrags and
# extensions and still stops a megabyte "candidate" at the door.
MAX_CANDIDATE_BYTES = 4 * 1024


class ConversationNamespace(Namespace):
    name = NAMESPACE

    def __init__(self, services: Any, service: ConversationService) -> None:
        super().__init__(services)
        self.service = service
        self.max_sdp_bytes = service.config.limits.max_sdp_bytes
        self.events["offer"] = self._sdp_handler("offer")
        self.events["answer"] = self._sdp_handler("answer")
        self.events["ice-candidate"] = self.ice_candidate

    def __repr__(self) -> str:
        return f"<ConversationNamespace {len(self.directory)} clients>"

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The service (scheduler, relay, consumer) and, when recording, the uploader."""
        from pratico_daemon.conversation.backend import run_service

        recording = self.service.recording
        if recording is None:
            await run_service(self.services, self.service, task_status=task_status)
            return
        async with trio.open_nursery() as nursery:
            await nursery.start(run_service, self.services, self.service)
            await nursery.start(recording.run)  # needs the backend run_service attached
            task_status.started()

    async def connect(self, client: Client, auth: Mapping[str, Any]) -> Mapping[str, Any] | None:
        if client.identity.user_id is None:
            raise AppError("unauthorized", "a token is required for /conversation")
        self.service.client_connected(client)
        return None

    async def reconnected(self, client: Client) -> None:
        self.service.client_connected(client)

    async def gone(self, client: Client) -> None:
        self.service.client_gone(client)

    def _user(self, client: Client) -> str:
        user_id = client.identity.user_id
        if user_id is None:
            raise AppError("unauthorized", "a token is required")
        return user_id

    def _sdp_handler(self, name: str) -> Any:
        async def handler(client: Client, payload: dict[str, Any]) -> dict[str, Any]:
            to_user, sdp = fields(payload, toUserId=ID, sdp=Field((str,), min_len=1))
            if len(sdp.encode()) > self.max_sdp_bytes:
                raise AppError("payload_too_large",
                               f"sdp: larger than {self.max_sdp_bytes} bytes")
            return await self.service.relay_signal(self._user(client), name, to_user, payload)

        handler.__name__ = name
        return handler

    async def ice_candidate(self, client: Client, payload: dict[str, Any]) -> dict[str, Any]:
        to_user, candidate = fields(payload, toUserId=ID, candidate=Field((str, dict)))
        if len(orjson.dumps(candidate)) > MAX_CANDIDATE_BYTES:
            raise AppError("payload_too_large",
                           f"candidate: larger than {MAX_CANDIDATE_BYTES} bytes")
        return await self.service.relay_signal(self._user(client), "ice-candidate", to_user,
                                               payload)
