"""Conversation sessions (seed 003, issue 7, PROTOCOL.md §4).

Time slots and their recurrence, registration, the scheduler (reminders,
session start, grace period, end), the session lifecycle in a Room actor,
WebRTC signalling over `/conversation`, REST, and domain events through a
transactional outbox to the bus.

Module map: `slots` (validation, RRULE), `lifecycle` (the state machine),
`db` + `repo` (one SQL body on PostgreSQL and SQLite, the outbox), `bus`
(Redis Streams / SQLite, the relay), `live` (room commands), `service` (what
REST, the namespace and the scheduler share), `namespace`, `rest`, `backend`.
"""

from __future__ import annotations

import weakref
from typing import Any

from pratico_daemon.conversation.namespace import ConversationNamespace
from pratico_daemon.conversation.service import ConversationService

_SERVICES: dict[int, ConversationService] = {}


def create_namespace(services: Any, *, service: ConversationService | None = None
                     ) -> ConversationNamespace:
    """The `/conversation` namespace for the daemon; its `run` opens the store and schedules.

    Needs `services.rooms` (the RoomRegistry) to be running before `run` starts.
    """
    from pratico_daemon.session.directory import ClientDirectory

    directory = ClientDirectory()
    if service is None:
        service = ConversationService(services.config, services.rooms, directory,
                                      node_id=services.node_id or "node")
    else:
        directory = service.directory
    namespace = ConversationNamespace(services, service)
    namespace.directory = directory
    register_service(services, service)
    return namespace


def register_service(services: Any, service: ConversationService) -> None:
    """Make `service` reachable from REST handlers (which only see `services`)."""
    key = id(services)
    _SERVICES[key] = service
    weakref.finalize(services, _SERVICES.pop, key, None)


def service_for(services: Any) -> ConversationService | None:
    return _SERVICES.get(id(services))
