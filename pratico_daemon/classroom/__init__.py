"""The classroom product: `/classroom` namespace, lesson REST, teacher presence (issue 5).

`create_namespace(services)` is what the daemon registers with the gateway;
`pratico_daemon.classroom.rest` declares the `/lessons` endpoints.
"""

from __future__ import annotations

from typing import Any

from pratico_daemon.classroom.namespace import ClassroomNamespace


def create_namespace(services: Any) -> ClassroomNamespace:
    """The `/classroom` namespace; `services.stores` must be open before its first event."""
    return ClassroomNamespace(services)


__all__ = ["ClassroomNamespace", "create_namespace"]
