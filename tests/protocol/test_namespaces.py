"""The namespace state machine of one Socket.IO connection."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pratico_daemon.protocol import socketio
from pratico_daemon.protocol.errors import LocalProtocolError, RemoteProtocolError
from pratico_daemon.protocol.event import Event
from pratico_daemon.protocol.namespaces import (
    ConnectRequested,
    Disconnected,
    NamespaceConnections,
    NamespaceState,
)

PRODUCTS = ("/classroom", "/pratico", "/conversation")


def test_connect_accept_event_disconnect() -> None:
    conns = NamespaceConnections(allowed=PRODUCTS)
    assert conns.receive('0/classroom,{"token":"t"}') == ConnectRequested(
        "/classroom", {"token": "t"}
    )
    assert conns.state("/classroom") is NamespaceState.CONNECTING
    assert conns.accept("/classroom", "sid1", pid="p1") == (
        '40/classroom,{"sid":"sid1","pid":"p1"}'
    )
    assert conns.connected() == ["/classroom"]
    assert conns.receive('2/classroom,3["join_lesson",{}]') == Event(
        "/classroom", "join_lesson", {}, 3
    )
    assert conns.receive("3/classroom,1[]") == socketio.Ack("/classroom", 1, ())
    assert "CONNECTED" in repr(conns)
    assert conns.receive("1/classroom,") == Disconnected("/classroom")
    assert conns.state("/classroom") is None


def test_refused_connect_frees_the_namespace() -> None:
    conns = NamespaceConnections(allowed=PRODUCTS)
    conns.receive("0/pratico,")
    frame = conns.refuse("/pratico", "unauthorized", "bad token")
    assert frame == '44/pratico,{"message":"bad token","data":{"code":"unauthorized"}}'
    assert conns.state("/pratico") is None
    assert conns.receive("0/pratico,") == ConnectRequested("/pratico", None)


def test_unknown_namespace_is_refused_like_socketio_does() -> None:
    conns = NamespaceConnections(allowed=PRODUCTS)
    with pytest.raises(RemoteProtocolError) as caught:
        conns.receive("0/admin,")
    assert caught.value.code == "not_found"
    assert caught.value.reply == (
        '44/admin,{"message":"Invalid namespace","data":{"code":"not_found"}}'
    )


def test_second_connect_and_namespace_bound() -> None:
    conns = NamespaceConnections(max_namespaces=2)
    conns.receive("0/a,")
    with pytest.raises(RemoteProtocolError) as caught:
        conns.receive("0/a,")
    assert caught.value.code == "conflict"
    conns.receive("0/b,")
    with pytest.raises(RemoteProtocolError) as caught:
        conns.receive("0/c,")
    assert caught.value.code == "conflict"
    assert caught.value.reply is not None


def test_events_before_connect_are_answered_or_dropped() -> None:
    conns = NamespaceConnections(allowed=PRODUCTS)
    conns.receive("0/classroom,")  # CONNECTING: not yet allowed to emit
    with pytest.raises(RemoteProtocolError) as caught:
        conns.receive('2/classroom,9["join_lesson",{}]')
    assert caught.value.code == "unauthorized"
    assert caught.value.reply is not None
    assert caught.value.reply.startswith("43/classroom,9[")
    with pytest.raises(RemoteProtocolError) as caught:
        conns.receive('2/pratico,["join",{}]')
    assert (caught.value.reply, caught.value.close_code) == (None, None)  # dropped


def test_client_connect_error_closes() -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        NamespaceConnections().receive('4/x,{"message":"m"}')
    assert caught.value.close_code == 1007


def test_session_layer_misuse_is_local() -> None:
    conns = NamespaceConnections()
    with pytest.raises(LocalProtocolError):
        conns.accept("/classroom", "sid")
    conns.receive("0/classroom,")
    conns.accept("/classroom", "sid")
    with pytest.raises(LocalProtocolError):
        conns.refuse("/classroom", "unauthorized")
    assert conns.disconnect("/classroom") == "41/classroom,"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "0/classroom,",
                "1/classroom,",
                '2/classroom,1["x",{}]',
                '2/classroom,["x"]',
                "3/classroom,2[]",
                "0/pratico,",
                "0/nope,",
                '4/classroom,{"message":"m"}',
                "garbage",
                "accept /classroom",
                "refuse /classroom",
                "disconnect /pratico",
            ]
        ),
        max_size=20,
    )
)
def test_any_sequence_keeps_the_machine_consistent(steps: list[str]) -> None:
    """Random interleavings: only the documented errors, states always coherent."""
    conns = NamespaceConnections(allowed=PRODUCTS)
    for step in steps:
        verb, _, namespace = step.partition(" ")
        try:
            if verb == "accept":
                conns.accept(namespace, "sid")
            elif verb == "refuse":
                conns.refuse(namespace, "forbidden")
            elif verb == "disconnect":
                conns.disconnect(namespace)
            else:
                result = conns.receive(step)
                if isinstance(result, Event):
                    assert conns.state(result.namespace) is NamespaceState.CONNECTED
        except (RemoteProtocolError, LocalProtocolError):
            pass
        assert set(conns.connected()) <= set(PRODUCTS)
