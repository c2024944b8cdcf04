"""Which `PraticoNamespace` serves a daemon's `Services` (the REST module needs it).

`Services` is a slotted attrs class owned by the daemon; rather than add a
product field to it, the namespace registers itself here when it is created,
keyed by the identity of its `Services`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pratico_daemon.pratico.live import PraticoNamespace

_BY_SERVICES: dict[int, tuple[Any, PraticoNamespace]] = {}


def register(services: Any, namespace: PraticoNamespace) -> None:
    # Drop entries of daemons that are gone (tests start many in one process).
    for key, (svc, _) in list(_BY_SERVICES.items()):
        if svc is services or (svc.gateway is None and svc.rooms is None):
            del _BY_SERVICES[key]
    _BY_SERVICES[id(services)] = (services, namespace)


def namespace_for(services: Any) -> PraticoNamespace | None:
    entry = _BY_SERVICES.get(id(services))
    if entry is None or entry[0] is not services:
        return None
    return entry[1]
