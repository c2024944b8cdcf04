"""Hypothesis strategies for the codec tests: JSON values, namespaces, events, packets."""

from __future__ import annotations

from hypothesis import strategies as st

from pratico_daemon.protocol import socketio
from pratico_daemon.protocol.event import Event

# JSON as orjson round-trips it: 64-bit integers, finite floats, any text.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)

namespaces = st.sampled_from(["/", "/classroom", "/pratico", "/conversation"]) | st.text(
    alphabet=socketio.NAMESPACE_CHARS,
    max_size=socketio.DEFAULT_MAX_NAMESPACE_CHARS - 1,
).map(lambda s: "/" + s)
event_names = st.text(min_size=1, max_size=40)
ack_ids = st.integers(0, 10**15 - 1)
refs = st.integers(-(2**53 - 1), 2**53 - 1) | st.text(min_size=1, max_size=40)

socketio_events = st.builds(Event, namespaces, event_names, json_objects, st.none() | ack_ids)
socketio_packets = (
    socketio_events
    | st.builds(socketio.Connect, namespaces, st.none() | json_objects)
    | st.builds(socketio.Disconnect, namespaces)
    | st.builds(socketio.Ack, namespaces, ack_ids, st.lists(json_values, max_size=3).map(tuple))
    | st.builds(socketio.ConnectError, namespaces, st.text(max_size=30), json_values)
)
