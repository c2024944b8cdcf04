"""Engine.IO v4: packets, polling payloads, the open packet and the session state machine."""

from __future__ import annotations

import base64

import engineio.packet as peer_packet
import engineio.payload as peer_payload
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pratico_daemon.protocol import engineio
from pratico_daemon.protocol.engineio import (
    Closed,
    Deliver,
    EngineIOSession,
    Packet,
    PacketType,
    Send,
    SessionState,
    Transport,
    Upgraded,
)
from pratico_daemon.protocol.errors import LocalProtocolError, RemoteProtocolError

text_packets = st.builds(Packet, st.sampled_from(PacketType), st.text(max_size=50))
binary_packets = st.builds(Packet, st.just(PacketType.MESSAGE), st.binary(max_size=50))


@settings(max_examples=300, deadline=None)
@given(text_packets | binary_packets)
def test_every_packet_type_round_trips_as_a_websocket_frame(packet: Packet) -> None:
    assert engineio.decode_packet(engineio.encode_packet(packet)) == packet


@settings(max_examples=300, deadline=None)
@given(st.lists(text_packets | binary_packets, min_size=1, max_size=6))
def test_polling_payloads_round_trip(packets: list[Packet]) -> None:
    # The record separator cannot appear inside a text packet of a payload.
    packets = [p for p in packets if isinstance(p.data, bytes) or "\x1e" not in p.data] or [
        Packet(PacketType.NOOP)
    ]
    body = engineio.encode_payload(packets)
    assert engineio.decode_payload(body) == packets
    assert engineio.decode_payload(body.encode()) == packets


def test_polling_payload_example() -> None:
    body = "4hello\x1eb" + base64.b64encode(b"\x01\x02").decode() + "\x1e2"
    assert engineio.decode_payload(body) == [
        Packet(PacketType.MESSAGE, "hello"),
        Packet(PacketType.MESSAGE, b"\x01\x02"),
        Packet(PacketType.PING, ""),
    ]


def test_open_packet() -> None:
    frame = engineio.encode_open(
        "abc",
        upgrades=["websocket"],
        ping_interval_s=25,
        ping_timeout_s=20,
        max_payload_bytes=1_000_000,
    )
    assert frame.startswith("0")
    assert orjson.loads(frame[1:]) == {
        "sid": "abc",
        "upgrades": ["websocket"],
        "pingInterval": 25000,
        "pingTimeout": 20000,
        "maxPayload": 1000000,
    }


@pytest.mark.parametrize("frame", ["", "7", "x4hello", "\x1e"])
def test_bad_frames(frame: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        engineio.decode_packet(frame)
    assert (caught.value.code, caught.value.close_code) == ("invalid_payload", 1007)


@pytest.mark.parametrize("body", [b"\xff\xfe", "b!!!notbase64", "4a\x1e", "9"])
def test_bad_payloads(body: str | bytes) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        engineio.decode_payload(body)
    assert caught.value.code == "invalid_payload"
    assert caught.value.http_status == 400


def test_payload_over_max_payload() -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        engineio.decode_payload("4" + "x" * 2000, max_payload_bytes=1000)
    assert (caught.value.code, caught.value.http_status) == ("message_too_large", 413)


def test_encoding_misuse_is_local() -> None:
    with pytest.raises(LocalProtocolError):
        engineio.encode_packet(Packet(PacketType.PING, b"x"))
    with pytest.raises(LocalProtocolError):
        engineio.encode_payload([])


# -- the session -------------------------------------------------------------------


def test_websocket_session_delivers_messages_and_answers_pings() -> None:
    session = EngineIOSession("s1", now=0.0)
    assert orjson.loads(session.open_packet()[1:])["upgrades"] == []
    assert session.receive_frame('40/classroom,{"token":"t"}', 1.0) == [
        Deliver('0/classroom,{"token":"t"}')
    ]
    assert session.receive_frame(b"\x00", 1.0) == [Deliver(b"\x00")]
    # A v3-style client ping is answered on the transport it came from.
    assert session.receive_frame("2", 1.0) == [Send("3", Transport.WEBSOCKET)]
    assert session.receive_frame("6", 1.0) == []
    assert session.state is SessionState.OPEN


def test_heartbeat_without_a_clock() -> None:
    session = EngineIOSession("s1", now=100.0, ping_interval_s=25, ping_timeout_s=20)
    assert session.next_deadline() == 125.0
    assert not session.ping_due(124.9)
    assert session.ping_due(125.0)
    assert session.send_ping(125.0) == "2"
    assert not session.ping_due(130.0)  # one ping at a time
    assert session.next_deadline() == 145.0
    assert not session.timed_out(144.9)
    session.receive_frame("3", 140.0)  # pong
    assert not session.timed_out(146.0)
    assert session.next_deadline() == 165.0
    session.send_ping(165.0)
    assert session.timed_out(185.0)
    assert session.close("ping timeout") == "1"
    assert session.state is SessionState.CLOSED
    assert session.close_reason == "ping timeout"
    assert session.next_deadline() == float("inf")
    assert not session.ping_due(1000.0)
    with pytest.raises(LocalProtocolError):
        session.send_ping(1000.0)


def test_polling_then_websocket_upgrade() -> None:
    """The probe sequence of the Engine.IO spec: 2probe → 3probe (+ noop on polling), then 5."""
    session = EngineIOSession("s1", now=0.0, transport=Transport.POLLING)
    assert orjson.loads(session.open_packet()[1:])["upgrades"] == ["websocket"]
    assert session.receive_payload('40/classroom,\x1e42/classroom,["a"]', 1.0) == [
        Deliver("0/classroom,"),
        Deliver('2/classroom,["a"]'),
    ]
    actions = session.receive_frame("2probe", 2.0, transport=Transport.WEBSOCKET)
    assert actions == [Send("3probe", Transport.WEBSOCKET), Send("6", Transport.POLLING)]
    assert session.state is SessionState.UPGRADING
    # The polling side keeps working until the upgrade completes.
    assert session.receive_payload("3", 2.5) == []
    assert session.receive_frame("5", 3.0, transport=Transport.WEBSOCKET) == [Upgraded()]
    assert (session.state, session.transport) == (SessionState.OPEN, Transport.WEBSOCKET)
    assert session.receive_frame('42["b"]', 4.0) == [Deliver('2["b"]')]


def test_upgrade_without_probe_closes() -> None:
    session = EngineIOSession("s1", now=0.0, transport=Transport.POLLING)
    with pytest.raises(RemoteProtocolError):
        session.receive_frame("5", 1.0, transport=Transport.WEBSOCKET)
    assert session.state is SessionState.CLOSED


def test_second_probe_closes() -> None:
    session = EngineIOSession("s1", now=0.0, transport=Transport.POLLING)
    session.receive_frame("2probe", 1.0, transport=Transport.WEBSOCKET)
    with pytest.raises(RemoteProtocolError):
        session.receive_frame("2probe", 1.0, transport=Transport.WEBSOCKET)
    assert session.state is SessionState.CLOSED


def test_close_packet_and_frames_after_it() -> None:
    session = EngineIOSession("s1", now=0.0, transport=Transport.POLLING)
    assert session.receive_payload('42["a"]\x1e1\x1e42["b"]', 1.0) == [
        Deliver('2["a"]'),
        Closed("client close"),
    ]
    assert session.state is SessionState.CLOSED
    assert session.receive_payload('42["c"]', 2.0) == []
    assert session.receive_frame('42["c"]', 2.0) == []


def test_max_payload_closes_with_1009() -> None:
    session = EngineIOSession("s1", now=0.0, max_payload_bytes=100)
    assert session.receive_frame("4" + "x" * 99, 1.0) == [Deliver("x" * 99)]
    with pytest.raises(RemoteProtocolError) as caught:
        session.receive_frame("4" + "é" * 60, 1.0)  # 61 characters, 121 bytes
    assert (caught.value.code, caught.value.close_code) == ("message_too_large", 1009)
    assert session.state is SessionState.CLOSED
    big_binary = EngineIOSession("s2", now=0.0, max_payload_bytes=100)
    with pytest.raises(RemoteProtocolError):
        big_binary.receive_frame(b"x" * 101, 1.0)


def test_client_open_packet_is_refused() -> None:
    session = EngineIOSession("s1", now=0.0)
    with pytest.raises(RemoteProtocolError):
        session.receive_frame('0{"sid":"x"}', 1.0)
    assert session.state is SessionState.CLOSED


# -- interop with python-engineio's own codec (the real client library) -------------

messages = st.builds(
    Packet,
    st.just(PacketType.MESSAGE),
    # Engine.IO messages carry Socket.IO text, which starts with its type digit
    # (python-engineio JSON-decodes message text that does not, e.g. "null").
    st.text(max_size=40).filter(lambda s: "\x1e" not in s).map(lambda s: "2" + s)
    | st.binary(min_size=1, max_size=40),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(messages, min_size=1, max_size=5))
def test_polling_payloads_agree_with_python_engineio(packets: list[Packet]) -> None:
    ours = engineio.encode_payload(packets)
    theirs = peer_payload.Payload(
        packets=[peer_packet.Packet(peer_packet.MESSAGE, data=p.data) for p in packets]
    ).encode()
    assert ours == theirs
    decoded = peer_payload.Payload(encoded_payload=ours).packets
    assert [p.data for p in decoded] == [p.data for p in packets]


def test_the_first_ping_may_come_early_and_later_ones_follow_each_pong() -> None:
    # The server spreads the first pings of sessions opened together.
    session = EngineIOSession("s1", now=100.0, ping_interval_s=25, first_ping_s=13.0)
    assert session.next_deadline() == 113.0
    assert session.ping_due(113.0)
    session.send_ping(113.0)
    session.receive_frame("3", 114.0)
    assert session.next_deadline() == 139.0  # a whole interval after the pong
