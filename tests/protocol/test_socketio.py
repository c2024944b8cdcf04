"""Socket.IO v5 codec: PROTOCOL.md §1a examples, round trips, refusals, interop."""

from __future__ import annotations

import orjson
import pytest
import socketio.packet as peer
from hypothesis import given, settings

from pratico_daemon.protocol import socketio
from pratico_daemon.protocol.errors import LocalProtocolError, RemoteProtocolError
from pratico_daemon.protocol.event import Event, error, success
from pratico_daemon.protocol.socketio import Ack, Connect, ConnectError, Disconnect

from .strategies import json_objects, namespaces, socketio_events, socketio_packets


def decode_frame(frame: str) -> socketio.Packet:
    assert frame.startswith("4"), frame
    return socketio.decode_packet(frame[1:])


# -- PROTOCOL.md §1a, verbatim ------------------------------------------------------


def test_client_connect_with_token_and_server_reply() -> None:
    assert socketio.decode_packet('0/classroom,{"token":"abc.def.ghi"}') == Connect(
        "/classroom", {"token": "abc.def.ghi"}
    )
    assert socketio.encode_connect_frame("/classroom", "s1d") == '40/classroom,{"sid":"s1d"}'


def test_event_with_ack_is_answered_with_a_success_ack() -> None:
    event = socketio.decode_packet(
        '2/classroom,17["join_lesson",{"user_id":"u1","lesson_id":"L1","role":"student"}]'
    )
    assert event == Event(
        "/classroom", "join_lesson", {"user_id": "u1", "lesson_id": "L1", "role": "student"}, 17
    )
    frame = socketio.encode_ack_frame("/classroom", 17, success({"lesson_id": "L1", "seat": 3}))
    assert frame == '43/classroom,17[{"status":"SUCCESS","data":{"lesson_id":"L1","seat":3}}]'


def test_refused_connect() -> None:
    frame = socketio.encode_connect_error_frame("/classroom", "unauthorized", "token expired")
    assert frame == ('44/classroom,{"message":"token expired","data":{"code":"unauthorized"}}')
    assert decode_frame(frame) == ConnectError(
        "/classroom", "token expired", {"code": "unauthorized"}
    )


def test_cooldown_refusal_carries_retry_after() -> None:
    frame = socketio.encode_connect_error_frame("/classroom", "cooldown", "wait", retry_after=12)
    body = orjson.loads(frame[len("44/classroom,") :])
    assert body["data"] == {"code": "cooldown", "retry_after": 12}


def test_error_ack_shape() -> None:
    frame = socketio.encode_ack_frame("/classroom", 4, error("lesson_not_found", "no lesson L9"))
    assert frame == (
        '43/classroom,4[{"status":"ERROR","data":'
        '{"code":"lesson_not_found","message":"no lesson L9"}}]'
    )


# -- other encodings -----------------------------------------------------------------


def test_main_namespace_is_omitted() -> None:
    assert socketio.encode_event_frame("/", "hello", {"a": 1}) == '42["hello",{"a":1}]'
    assert socketio.encode_disconnect_frame("/") == "41"
    assert socketio.decode_packet("0") == Connect("/", None)
    assert socketio.decode_packet("1/pratico,") == Disconnect("/pratico")


def test_event_frame_bytes_match_text() -> None:
    text = socketio.encode_event_frame("/pratico", "chat_message", {"text": "é😀"})
    assert socketio.encode_event_frame_bytes("/pratico", "chat_message", {"text": "é😀"}) == (
        text.encode()
    )


def test_recovery_fields() -> None:
    """Connection-state recovery: the CONNECT reply carries `pid`, events an offset."""
    assert socketio.encode_connect_frame("/pratico", "s", pid="p1") == (
        '40/pratico,{"sid":"s","pid":"p1"}'
    )
    frame = socketio.encode_event_frame("/pratico", "page_changed", {"page": 2}, offset="1-7")
    assert frame == '42/pratico,["page_changed",{"page":2},"1-7"]'
    # Extra arguments after the payload are ignored on decode.
    assert decode_frame(frame) == Event("/pratico", "page_changed", {"page": 2})


def test_event_without_payload_is_an_empty_object() -> None:
    assert socketio.decode_packet('2/pratico,3["leave"]') == Event("/pratico", "leave", {}, 3)


def test_local_misuse_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        socketio.encode_event_frame("classroom", "x", {})  # no leading "/"
    with pytest.raises(LocalProtocolError):
        socketio.encode_event_frame("/a,b", "x", {})
    with pytest.raises(LocalProtocolError):
        socketio.encode_event_frame("/classroom", "x", {"when": object()})
    with pytest.raises(LocalProtocolError):
        socketio.encode_frame(Event("/classroom", "x", {}, ack="ref-1"))


# -- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code", "ack", "close_code"),
    [
        ("2/classroom,17[1,{}]", "invalid_payload", 17, 1007),
        ('2/classroom,17["join_lesson","not an object"]', "invalid_payload", 17, 1007),
        ('2/classroom,17["join_lesson",null]', "invalid_payload", 17, 1007),
        ('2/classroom,17{"a":1}', "invalid_payload", 17, 1007),
        ("2/classroom,17[garbage", "invalid_payload", 17, 1007),
        ("2/classroom,17", "invalid_payload", 17, 1007),
        ('2/classroom,["x",1]', "invalid_payload", None, 1007),
        ('51-/classroom,17["up",{"_placeholder":true,"num":0}]', "binary_not_supported", 17, None),
        ('51-/classroom,["up",{"_placeholder":true,"num":0}]', "binary_not_supported", None, None),
        ('61-/classroom,17[{"_placeholder":true,"num":0}]', "binary_not_supported", None, None),
        ("9hello", "invalid_payload", None, 1007),
        ("", "invalid_payload", None, 1007),
        ("3/classroom,[1]", "invalid_payload", None, 1007),
        ("1/classroom,{}", "invalid_payload", None, 1007),
        ('2/class room,1["x"]', "invalid_payload", None, 1007),
        ("2" + "/" + "n" * 100 + ',1["x"]', "invalid_payload", None, 1007),
        ('2/classroom,1234567890123456["x"]', "invalid_payload", None, 1007),
    ],
)
def test_refusals_say_what_to_answer(
    text: str, code: str, ack: int | None, close_code: int | None
) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        socketio.decode_packet(text)
    exc = caught.value
    assert (exc.code, exc.ack, exc.close_code) == (code, ack, close_code)
    if ack is None:
        assert exc.reply is None
    else:
        # The reply is an ERROR ack in the same namespace, ready to send.
        assert exc.reply is not None
        assert decode_frame(exc.reply) == Ack("/classroom", ack, (error(code, exc.message),))


def test_connect_with_a_non_object_payload_gets_a_connect_error() -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        socketio.decode_packet('0/classroom,"token"')
    reply = caught.value.reply
    assert reply is not None
    refused = decode_frame(reply)
    assert isinstance(refused, ConnectError)
    assert refused.namespace == "/classroom"
    assert refused.data == {"code": "invalid_payload"}


def test_too_large_event_is_answered_when_its_ack_is_known() -> None:
    big = "x" * 70_000
    with pytest.raises(RemoteProtocolError) as caught:
        socketio.decode_packet(f'2/pratico,8["chat_send",{{"text":"{big}"}}]')
    assert (caught.value.code, caught.value.ack, caught.value.close_code) == (
        "message_too_large",
        8,
        1009,
    )
    assert caught.value.reply is not None
    assert caught.value.reply.startswith("43/pratico,8[")
    with pytest.raises(RemoteProtocolError) as caught:
        socketio.decode_packet(f'2/pratico,["chat_send",{{"text":"{big}"}}]')
    assert (caught.value.ack, caught.value.reply, caught.value.close_code) == (None, None, 1009)
    # The limit is an argument.
    event = socketio.decode_packet(f'2/pratico,["chat_send",{{"text":"{big}"}}]', max_bytes=100_000)
    assert isinstance(event, Event)
    assert len(event.payload["text"]) == 70_000


def test_limit_counts_utf8_bytes() -> None:
    text = '2["x",{"t":"' + "é" * 600 + '"}]'  # 600 characters, 1,200 bytes
    with pytest.raises(RemoteProtocolError):
        socketio.decode_packet(text, max_bytes=1000)
    assert isinstance(socketio.decode_packet(text, max_bytes=1300), Event)


# -- properties --------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(socketio_packets)
def test_every_packet_type_round_trips(packet: socketio.Packet) -> None:
    assert socketio.decode_packet(socketio.encode_packet(packet)) == packet
    assert decode_frame(socketio.encode_frame(packet)) == packet


@settings(max_examples=200, deadline=None)
@given(socketio_events)
def test_events_round_trip_through_the_fast_encoder(event: Event) -> None:
    assert isinstance(event.ack, int | None)
    frame = socketio.encode_event_frame(event.namespace, event.name, event.payload, ack=event.ack)
    assert decode_frame(frame) == event


@settings(max_examples=200, deadline=None)
@given(namespaces, json_objects)
def test_python_socketio_reads_what_we_write(namespace: str, payload: dict) -> None:
    """The real client library's parser, not only our own, agrees with our frames."""
    frame = socketio.encode_event_frame(namespace, "broadcast", payload, ack=5)
    theirs = peer.Packet(encoded_packet=frame[1:])
    assert theirs.packet_type == peer.EVENT
    assert (theirs.namespace or "/") == namespace
    assert theirs.id == 5
    assert theirs.data == ["broadcast", payload]


@settings(max_examples=200, deadline=None)
@given(namespaces, json_objects)
def test_we_read_what_python_socketio_writes(namespace: str, payload: dict) -> None:
    theirs = peer.Packet(peer.EVENT, data=["answer_quiz", payload], namespace=namespace, id=9)
    assert socketio.decode_packet(theirs.encode()) == Event(namespace, "answer_quiz", payload, 9)
