"""Our Socket.IO codec against npm socket.io-parser, the parser inside socket.io-client.

One node process per hypothesis example decodes a batch of our frames and
encodes a batch of packets for us to decode (tests/protocol/sio_parser.js).
The parser comes from tests/js/node_modules (`npm ci --prefix tests/js`);
without it this test fails rather than skips.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pratico_daemon.protocol import socketio
from pratico_daemon.protocol.event import Event

from .strategies import namespaces

SCRIPT = Path(__file__).with_name("sio_parser.js")
PARSER = Path(__file__).parents[1] / "js" / "node_modules" / "socket.io-parser"
# socket.io-parser refuses these names in EVENT packets (they are client-side events).
RESERVED = {
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
}

# JavaScript numbers: integers stay exact below 2**53.
js_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
js_values = st.recursive(
    js_scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=8,
)
js_objects = st.dictionaries(st.text(max_size=6), js_values, max_size=4)
names = st.text(min_size=1, max_size=20).filter(lambda n: n not in RESERVED)
acks = st.none() | st.integers(0, 10**9)
packets = (
    st.builds(Event, namespaces, names, js_objects, acks)
    | st.builds(socketio.Connect, namespaces, st.none() | js_objects)
    | st.builds(socketio.Disconnect, namespaces)
    | st.builds(
        socketio.Ack, namespaces, st.integers(0, 10**9), st.lists(js_values, max_size=3).map(tuple)
    )
    | st.builds(socketio.ConnectError, namespaces, st.text(max_size=20), js_objects)
)


def as_js(packet: socketio.Packet) -> dict[str, Any]:
    """The packet as socket.io-parser represents it: {type, nsp, data?, id?}."""
    js: dict[str, Any] = {"nsp": packet.namespace}
    if isinstance(packet, Event):
        js.update(type=2, data=[packet.name, packet.payload])
        if packet.ack is not None:
            js["id"] = packet.ack
    elif isinstance(packet, socketio.Ack):
        js.update(type=3, data=list(packet.args), id=packet.ack)
    elif isinstance(packet, socketio.Connect):
        js["type"] = 0
        if packet.data is not None:
            js["data"] = packet.data
    elif isinstance(packet, socketio.Disconnect):
        js["type"] = 1
    else:
        js.update(type=4, data={"message": packet.message, "data": packet.data})
    return js


def run_node(jobs: list[dict[str, Any]]) -> list[Any]:
    node = shutil.which("node")
    assert node, "node is needed for the socket.io-parser interop test"
    assert PARSER.is_dir(), f"run `npm ci --prefix tests/js` first ({PARSER} is missing)"
    done = subprocess.run(
        [node, str(SCRIPT)],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(done.stdout)


def normalise(value: Any) -> Any:
    """JSON as JavaScript sees it: tuples are arrays and every number is a double."""
    return json.loads(json.dumps(value), parse_int=float)


@settings(max_examples=8, deadline=None)
@given(st.lists(packets, min_size=40, max_size=40))
def test_socketio_parser_and_we_agree_both_ways(batch: list[socketio.Packet]) -> None:
    jobs = [{"decode": socketio.encode_packet(p)} for p in batch]
    jobs += [{"encode": as_js(p)} for p in batch]
    results = run_node(jobs)
    decoded_by_js, encoded_by_js = results[: len(batch)], results[len(batch) :]
    for packet, theirs in zip(batch, decoded_by_js, strict=True):
        expected = as_js(packet)
        assert theirs is not None, packet
        assert "error" not in theirs, (packet, theirs)
        assert normalise({k: theirs.get(k) for k in expected}) == normalise(expected)
        assert theirs.get("id") == expected.get("id")
    for packet, frame in zip(batch, encoded_by_js, strict=True):
        assert isinstance(frame, str), (packet, frame)
        ours = socketio.decode_packet(frame)
        assert normalise(as_js(ours)) == normalise(as_js(packet))
