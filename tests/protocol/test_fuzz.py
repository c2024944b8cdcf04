"""Hostile input: every decoder raises only `RemoteProtocolError`, whatever it is fed.

wsproto keeps a fuzz/ directory for this; we use hypothesis for shaped input
and a seeded mutation loop for volume (issue 4: at least 100,000 frames).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pratico_daemon.errors import HTTP_STATUS
from pratico_daemon.protocol import engineio, jsonframe, socketio
from pratico_daemon.protocol.engineio import EngineIOSession, Transport
from pratico_daemon.protocol.errors import RemoteProtocolError
from pratico_daemon.protocol.event import Event
from pratico_daemon.protocol.namespaces import NamespaceConnections

from .strategies import json_values

ACCEPTED, REFUSED = "accepted", "refused"


def check_refusal(exc: RemoteProtocolError) -> None:
    """A refusal must be actionable: a known code, and a reply that is itself valid."""
    assert exc.code in HTTP_STATUS
    assert exc.close_code in (None, 1003, 1007, 1009)
    if exc.reply is not None:
        assert exc.ack is not None or exc.reply.startswith("44")
        if exc.reply.startswith("4"):  # a Socket.IO frame: ERROR ack or CONNECT_ERROR
            answer = socketio.decode_packet(exc.reply[1:])
            assert isinstance(answer, socketio.Ack | socketio.ConnectError)
        else:
            assert orjson.loads(exc.reply)["type"] == "reply"


def feed(decode: Callable[[Any], Any], frame: Any) -> str:
    """Run one decoder; anything but success or a RemoteProtocolError fails the test."""
    try:
        decode(frame)
    except RemoteProtocolError as exc:
        check_refusal(exc)
        return REFUSED
    return ACCEPTED


def refusal_of(decode: Callable[[Any], Any], frame: Any) -> RemoteProtocolError | None:
    try:
        decode(frame)
    except RemoteProtocolError as exc:
        return exc
    return None


def socketio_decode(text: str) -> socketio.Packet:
    packet = socketio.decode_packet(text)
    if isinstance(packet, Event):
        assert isinstance(packet.payload, dict)
        assert socketio.valid_namespace(packet.namespace)
    return packet


def json_decode(frame: str | bytes) -> Event:
    event = jsonframe.decode_frame(frame, "/conversation")
    assert isinstance(event.payload, dict)
    assert isinstance(event.name, str)
    return event


def session_decode(frame: str | bytes) -> None:
    for transport in Transport:
        session = EngineIOSession("s", now=0.0, transport=transport)
        session.receive_frame(frame, 1.0, transport=transport)


def polling_decode(body: str | bytes) -> None:
    EngineIOSession("s", now=0.0, transport=Transport.POLLING).receive_payload(body, 1.0)


def namespaces_decode(text: str | bytes) -> None:
    conns = NamespaceConnections(allowed=("/classroom", "/pratico"))
    conns.receive("0/classroom,")
    conns.accept("/classroom", "sid")
    conns.receive(text)  # type: ignore[arg-type]  # bytes must be refused, not crash


TEXT_DECODERS: list[Callable[[Any], Any]] = [
    namespaces_decode,
    engineio.decode_packet,
    engineio.decode_payload,
    socketio_decode,
    json_decode,
    session_decode,
    polling_decode,
]

# Text that looks like our protocols often enough to get past the first check.
protocol_text = st.text(alphabet='0123456789/,[]{}":-b\x1eprobeclassroom \\é😀\x00', max_size=60)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80) | protocol_text)
def test_random_text_raises_only_remote_errors(text: str) -> None:
    for decode in TEXT_DECODERS:
        feed(decode, text)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_raise_only_remote_errors(data: bytes) -> None:
    for decode in TEXT_DECODERS:
        feed(decode, data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["0", "1", "2", "3", "4", "5", "6", "51-", "61-"]),
    st.sampled_from(["", "/classroom,", "/pratico,", "/,"]),
    st.sampled_from(["", "0", "17", "999999999999999"]),
    json_values,
)
def test_random_json_in_socketio_packets(kind: str, ns: str, ack: str, value: Any) -> None:
    body = orjson.dumps(value).decode()
    text = kind + ns + ack + body
    assert feed(socketio_decode, text) in (ACCEPTED, REFUSED)
    assert feed(namespaces_decode, text) in (ACCEPTED, REFUSED)
    assert feed(session_decode, "4" + text) in (ACCEPTED, REFUSED)
    # An EVENT with a recoverable ack id is always answerable, never a close.
    # (A body starting with a digit would run into the ack id's digits.)
    if kind == "2" and ack and not body[0].isdigit():
        refusal = refusal_of(socketio.decode_packet, text)
        if refusal is not None:
            assert refusal.ack == int(ack)
            assert refusal.reply is not None


@settings(max_examples=500, deadline=None)
@given(json_values, st.dictionaries(st.sampled_from(["type", "ref", "x"]), json_values))
def test_random_json_in_json_frames(value: Any, obj: dict[str, Any]) -> None:
    assert feed(json_decode, orjson.dumps(value).decode()) in (ACCEPTED, REFUSED)
    assert feed(json_decode, orjson.dumps(obj).decode()) in (ACCEPTED, REFUSED)


# -- volume: >= 100,000 frames from a seeded mutation loop ------------------------------

SEEDS = [
    '0/classroom,{"token":"abc"}',
    "0",
    "1/pratico,",
    '2/classroom,17["join_lesson",{"user_id":"u1","lesson_id":"L1"}]',
    '2["chat_send",{"text":"bonjour"}]',
    '3/conversation,4[{"status":"SUCCESS","data":{}}]',
    '4/classroom,{"message":"no","data":{"code":"unauthorized"}}',
    '51-/pratico,3["up",{"_placeholder":true,"num":0}]',
    '61-/pratico,3[{"_placeholder":true,"num":0}]',
    '{"type":"offer","ref":7,"toUserId":"u2","sdp":"v=0"}',
    '{"type":"join","ref":"r1"}',
    "2probe",
    "5",
]
ALPHABET = '0123456789/,[]{}":-bx\x1e é😀\\n'


def mutate(rng: random.Random, frame: str) -> str:
    op = rng.randrange(6)
    i = rng.randrange(len(frame) + 1)
    if op == 0:  # truncate
        return frame[:i]
    if op == 1:  # insert
        return frame[:i] + "".join(rng.choices(ALPHABET, k=rng.randint(1, 4))) + frame[i:]
    if op == 2:  # delete a slice
        return frame[:i] + frame[i + rng.randint(1, 5) :]
    if op == 3:  # replace one character
        return frame[:i] + rng.choice(ALPHABET) + frame[i + 1 :]
    if op == 4:  # splice two seeds
        other = rng.choice(SEEDS)
        return frame[:i] + other[rng.randrange(len(other) + 1) :]
    return "".join(rng.choices(ALPHABET, k=rng.randint(0, 40)))  # pure noise


def test_a_hundred_thousand_generated_frames() -> None:
    """Seeded generator loop (not hypothesis): 100,000 frames, each into three decoders.

    A frame is a seed (a valid frame of each protocol) after 1-3 mutations, or
    noise; about one in ten is sent as bytes. Runs in a few seconds.
    """
    rng = random.Random(20261122)
    outcomes = {"socketio": {ACCEPTED: 0, REFUSED: 0}, "json": {ACCEPTED: 0, REFUSED: 0}}
    session = EngineIOSession("s", now=0.0)
    frames = 0
    for n in range(100_000):
        text = rng.choice(SEEDS)
        for _ in range(rng.randint(1, 3)):
            text = mutate(rng, text)
        frame: str | bytes = text.encode("utf-8", "surrogatepass") if n % 10 == 0 else text
        outcomes["socketio"][feed(socketio_decode, frame)] += 1
        outcomes["json"][feed(json_decode, frame)] += 1
        # One long-lived session, replaced when the garbage closes it.
        if session.state is engineio.SessionState.CLOSED:
            session = EngineIOSession("s", now=float(n))
        try:
            session.receive_frame(frame, float(n))
        except RemoteProtocolError as exc:
            check_refusal(exc)
        frames += 1
    assert frames >= 100_000
    # The generator is useful only if it reaches both sides of each decoder.
    for counts in outcomes.values():
        assert counts[ACCEPTED] > 1_000, outcomes
        assert counts[REFUSED] > 10_000, outcomes
