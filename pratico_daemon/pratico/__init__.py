"""Pratico live rooms (seed 000, PROTOCOL.md §3): capsule sessions with shareable links.

The daemon wires this product with two calls:

    namespace = create_namespace(services)      # a Namespace named "/pratico"
    nursery.start(namespace.run)                 # owns end-of-session cleanup
    for checkpoint in await stores.checkpoints.list("pratico"):
        await restore(services, checkpoint)       # rooms back, quiz deadlines re-armed

The REST routes live in `pratico_daemon.pratico.rest` (imported by http/app.py).
"""

from __future__ import annotations

from typing import Any

from pratico_daemon.pratico.live import KIND, PraticoNamespace
from pratico_daemon.pratico.registry import namespace_for, register
from pratico_daemon.storage.protocols import Checkpoint

__all__ = ["KIND", "PraticoNamespace", "create_namespace", "restore"]


def create_namespace(services: Any) -> PraticoNamespace:
    """The `/pratico` namespace for this daemon (also what its REST routes use)."""
    namespace = PraticoNamespace(services)
    register(services, namespace)
    return namespace


async def restore(services: Any, checkpoint: Checkpoint) -> None:
    """Re-open the room of `checkpoint` (kind "pratico") after a restart.

    Needs `services.rooms` running and the namespace created; an open quiz
    closes at its original deadline (at once if that has passed).
    """
    namespace = namespace_for(services)
    if namespace is None:
        raise RuntimeError("create_namespace(services) first")
    await namespace.restore(checkpoint)
