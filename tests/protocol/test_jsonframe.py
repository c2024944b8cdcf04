"""Plain-JSON framing (PROTOCOL.md §1b): decode, encode, refusals."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pratico_daemon.protocol import jsonframe
from pratico_daemon.protocol.errors import LocalProtocolError, RemoteProtocolError
from pratico_daemon.protocol.event import Event, error, success

from .strategies import json_objects, refs


def test_conversation_seed_example() -> None:
    frame = '{"type":"offer","toUserId":"u2","sdp":"v=0..."}'
    assert jsonframe.decode_frame(frame, "/conversation") == Event(
        "/conversation", "offer", {"toUserId": "u2", "sdp": "v=0..."}, None
    )


def test_ref_becomes_the_ack_and_the_reply_carries_it() -> None:
    event = jsonframe.decode_frame('{"type":"join","ref":"r-1","room":"algebre"}', "/pratico")
    assert event == Event("/pratico", "join", {"room": "algebre"}, "r-1")
    reply = orjson.loads(jsonframe.encode_reply("r-1", success({"participant_id": "p1"})))
    assert reply == {
        "type": "reply",
        "ref": "r-1",
        "status": "SUCCESS",
        "data": {"participant_id": "p1"},
    }


def test_server_event_has_its_fields_at_the_top_level() -> None:
    frame = jsonframe.encode_event("participant-joined", {"userId": "u3"})
    assert orjson.loads(frame) == {"type": "participant-joined", "userId": "u3"}
    # Same signature as the Socket.IO fast encoder, for rooms.broadcast.register_encoder.
    assert jsonframe.encode_event_frame("/conversation", "x", {"a": 1}) == '{"type":"x","a":1}'
    assert (
        jsonframe.encode_event_frame_bytes("/c", "x", {"a": "é"}) == '{"type":"x","a":"é"}'.encode()
    )
    # A payload field named "type" cannot hide the event's name.
    assert orjson.loads(jsonframe.encode_event("x", {"type": "y"}))["type"] == "x"


def test_error_reply_shape() -> None:
    frame = jsonframe.encode_error_reply(7, "cooldown", "wait", retry_after=30)
    assert orjson.loads(frame) == {
        "type": "reply",
        "ref": 7,
        "status": "ERROR",
        "data": {"code": "cooldown", "message": "wait", "retry_after": 30},
    }


@pytest.mark.parametrize(
    ("frame", "code", "ref", "close_code"),
    [
        ("not json", "invalid_payload", None, 1007),
        ("[1,2]", "invalid_payload", None, 1007),
        ("42", "invalid_payload", None, 1007),
        ('{"ref":3}', "invalid_payload", 3, 1007),
        ('{"type":5,"ref":"a"}', "invalid_payload", "a", 1007),
        ('{"type":""}', "invalid_payload", None, 1007),
        ('{"type":"x","ref":[1]}', "invalid_payload", None, 1007),
        ('{"type":"x","ref":true}', "invalid_payload", None, 1007),
        ('{"type":"x","ref":1.5}', "invalid_payload", None, 1007),
        ('{"type":"x","ref":""}', "invalid_payload", None, 1007),
        (b'{"type":"x"}', "binary_not_supported", None, 1003),
    ],
)
def test_refusals(frame: str | bytes, code: str, ref: object, close_code: int) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        jsonframe.decode_frame(frame, "/conversation")
    exc = caught.value
    assert (exc.code, exc.ack, exc.close_code) == (code, ref, close_code)
    if ref is None:
        assert exc.reply is None
    else:
        assert orjson.loads(exc.reply or "") == {
            "type": "reply",
            "ref": ref,
            **error(code, exc.message),
        }


def test_oversized_frame_is_answered_when_its_ref_is_readable() -> None:
    frame = orjson.dumps({"type": "offer", "ref": 9, "sdp": "x" * 100_000}).decode()
    with pytest.raises(RemoteProtocolError) as caught:
        jsonframe.decode_frame(frame, "/conversation")
    assert (caught.value.code, caught.value.ack, caught.value.close_code) == (
        "message_too_large",
        9,
        1009,
    )
    assert orjson.loads(caught.value.reply or "")["data"]["code"] == "message_too_large"
    # Too big to be worth parsing at all (2 MB against 16 KiB): close 1009, no reply.
    huge = orjson.dumps({"type": "offer", "ref": 9, "sdp": "x" * 2_000_000}).decode()
    with pytest.raises(RemoteProtocolError) as caught:
        jsonframe.decode_frame(huge, "/conversation", max_bytes=16 * 1024)
    assert (caught.value.reply, caught.value.close_code) == (None, 1009)


def test_encoding_garbage_is_our_bug() -> None:
    with pytest.raises(LocalProtocolError):
        jsonframe.encode_event("x", {"bad": {1, 2}})


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=30), json_objects, st.none() | refs)
def test_frames_round_trip(name: str, payload: dict, ref: int | str | None) -> None:
    fields = {k: v for k, v in payload.items() if k not in ("type", "ref")}
    message = {"type": name, **fields} if ref is None else {"type": name, "ref": ref, **fields}
    frame = orjson.dumps(message).decode()
    event = jsonframe.decode_frame(frame, "/conversation")
    assert event == Event("/conversation", name, fields, ref)
    # The server's encoding of the same event decodes to the same name and fields.
    assert jsonframe.decode_frame(jsonframe.encode_event(name, fields), "/x") == Event(
        "/x", name, fields, None
    )


@settings(max_examples=200, deadline=None)
@given(refs, json_objects)
def test_replies_round_trip(ref: int | str, data: dict) -> None:
    extra = {k: v for k, v in data.items() if k not in ("code", "message")}
    for reply in (success(data), error("not_found", "gone", **extra)):
        decoded = orjson.loads(jsonframe.encode_reply(ref, reply))
        assert decoded == {"type": "reply", "ref": ref, **reply}
