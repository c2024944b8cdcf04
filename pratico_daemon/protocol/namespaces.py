"""Which Socket.IO namespaces one Engine.IO session has joined: a sans-IO state machine.

Theory of operation
-------------------
One Engine.IO session multiplexes several Socket.IO namespaces (a teacher app
joins `/classroom`; another client may join `/pratico` and `/conversation` on
the same socket). `NamespaceConnections` keeps, per namespace, where the
client stands, and turns each decoded packet into what the session layer must
do next. It does no authentication itself: a CONNECT makes the namespace
CONNECTING and comes back as `ConnectRequested`; the session layer checks the
token and calls `accept` (→ CONNECTED, returns the `40` frame) or `refuse`
(→ gone, returns the `44` frame).

    (absent) ──CONNECT──▶ CONNECTING ──accept()──▶ CONNECTED
        ▲                     │                        │
        └──── refuse() ───────┘◀── DISCONNECT / disconnect() ──┘

Packets for a namespace that is not CONNECTED never reach a handler: an
EVENT with an ack id is answered `unauthorized`, anything else is dropped (a
real client buffers its emits until connected, so only a broken one does
this). A CONNECT to an unknown namespace is refused with `not_found` exactly as
Socket.IO refuses it ("Invalid namespace"); a second CONNECT to a namespace
already joined is refused with `conflict`. All refusals are
`RemoteProtocolError`s with a ready `reply`, so the connection lives on.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from typing import Any

import attrs

from pratico_daemon.protocol import socketio
from pratico_daemon.protocol.errors import LocalProtocolError, RemoteProtocolError
from pratico_daemon.protocol.event import Event, error

# Three product namespaces exist; 8 leaves room when `allowed` is not given.
DEFAULT_MAX_NAMESPACES = 8


class NamespaceState(enum.Enum):
    CONNECTING = "CONNECTING"
    CONNECTED = "CONNECTED"


class _Trigger(enum.Enum):
    CONNECT = "connect"
    ACCEPT = "accept"
    REFUSE = "refuse"
    DISCONNECT = "disconnect"


# None stands for "absent" (not joined).
_TRANSITIONS: dict[tuple[NamespaceState | None, _Trigger], NamespaceState | None] = {
    (None, _Trigger.CONNECT): NamespaceState.CONNECTING,
    (NamespaceState.CONNECTING, _Trigger.ACCEPT): NamespaceState.CONNECTED,
    (NamespaceState.CONNECTING, _Trigger.REFUSE): None,
    (NamespaceState.CONNECTING, _Trigger.DISCONNECT): None,
    (NamespaceState.CONNECTED, _Trigger.DISCONNECT): None,
}


@attrs.frozen
class ConnectRequested:
    """The client asks to join `namespace` with `auth` (its CONNECT payload, or None)."""

    namespace: str
    auth: dict[str, Any] | None


@attrs.frozen
class Disconnected:
    """The client left `namespace` (it sent DISCONNECT)."""

    namespace: str


NamespaceEvent = ConnectRequested | Disconnected | Event | socketio.Ack


class NamespaceConnections:
    """Namespace states of one Engine.IO session; see "Theory of operation" above."""

    def __init__(
        self,
        *,
        allowed: Collection[str] | None = None,
        max_namespaces: int = DEFAULT_MAX_NAMESPACES,
        max_bytes: int = socketio.DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.allowed = None if allowed is None else frozenset(allowed)
        self.max_namespaces = max_namespaces
        self.max_bytes = max_bytes
        self._states: dict[str, NamespaceState] = {}

    def __repr__(self) -> str:
        joined = " ".join(f"{ns}:{state.name}" for ns, state in self._states.items())
        return f"<NamespaceConnections {joined or 'none'}>"

    def state(self, namespace: str) -> NamespaceState | None:
        return self._states.get(namespace)

    def connected(self) -> list[str]:
        """The namespaces whose events reach handlers, in joining order."""
        return [ns for ns, s in self._states.items() if s is NamespaceState.CONNECTED]

    # -- input ------------------------------------------------------------------

    def receive(self, text: str) -> NamespaceEvent:
        """Decode one Socket.IO message and check it against the namespace states."""
        packet = socketio.decode_packet(text, max_bytes=self.max_bytes)
        if isinstance(packet, socketio.Connect):
            return self._receive_connect(packet)
        namespace = packet.namespace
        joined = self._states.get(namespace) is NamespaceState.CONNECTED
        if isinstance(packet, socketio.Disconnect):
            if namespace in self._states:
                self._transition(namespace, _Trigger.DISCONNECT)
            return Disconnected(namespace)
        if isinstance(packet, Event):
            if not joined:
                message = f"not connected to {namespace}"
                reply = (
                    None
                    if packet.ack is None
                    else socketio.encode_ack_frame(
                        namespace, int(packet.ack), error("unauthorized", message)
                    )
                )
                raise RemoteProtocolError(
                    "unauthorized", message, ack=packet.ack, namespace=namespace, reply=reply
                )
            return packet
        if isinstance(packet, socketio.Ack):
            if not joined:
                raise RemoteProtocolError(
                    "unauthorized", f"not connected to {namespace}", namespace=namespace
                )
            return packet
        # CONNECT_ERROR goes from servers to clients only.
        raise RemoteProtocolError(
            "invalid_payload", "clients do not send CONNECT_ERROR", close_code=1007
        )

    def _receive_connect(self, packet: socketio.Connect) -> ConnectRequested:
        namespace = packet.namespace
        if self.allowed is not None and namespace not in self.allowed:
            raise self._refusal(namespace, "not_found", "Invalid namespace")
        if namespace in self._states:
            raise self._refusal(namespace, "conflict", f"already connected to {namespace}")
        if len(self._states) >= self.max_namespaces:
            raise self._refusal(namespace, "conflict", "too many namespaces on one connection")
        self._transition(namespace, _Trigger.CONNECT)
        return ConnectRequested(namespace, packet.data)

    @staticmethod
    def _refusal(namespace: str, code: str, message: str) -> RemoteProtocolError:
        return RemoteProtocolError(
            code,
            message,
            namespace=namespace,
            reply=socketio.encode_connect_error_frame(namespace, code, message),
        )

    # -- decisions of the session layer --------------------------------------------

    def accept(self, namespace: str, sid: str, **extra: Any) -> str:
        """CONNECTING → CONNECTED; returns the `40/ns,{"sid":…}` frame to send."""
        self._local_transition(namespace, _Trigger.ACCEPT)
        return socketio.encode_connect_frame(namespace, sid, **extra)

    def refuse(self, namespace: str, code: str, message: str = "", **data: Any) -> str:
        """CONNECTING → gone; returns the `44/ns,{…}` frame to send."""
        self._local_transition(namespace, _Trigger.REFUSE)
        return socketio.encode_connect_error_frame(namespace, code, message, **data)

    def disconnect(self, namespace: str) -> str:
        """Server-side leave (kick, logout); returns the `41/ns,` frame to send."""
        self._local_transition(namespace, _Trigger.DISCONNECT)
        return socketio.encode_disconnect_frame(namespace)

    def _local_transition(self, namespace: str, trigger: _Trigger) -> None:
        if (self._states.get(namespace), trigger) not in _TRANSITIONS:
            raise LocalProtocolError(
                "internal", f"{trigger.value} {namespace} in state {self._states.get(namespace)}"
            )
        self._transition(namespace, trigger)

    def _transition(self, namespace: str, trigger: _Trigger) -> None:
        new = _TRANSITIONS[self._states.get(namespace), trigger]
        if new is None:
            self._states.pop(namespace, None)
        else:
            self._states[namespace] = new
