"""Micro-benchmark of the sans-IO codecs against python-socketio's own packet codec.

Usage: .venv/bin/python bench/codec_bench.py [--seconds 0.3]

Encoding is on the broadcast hot path (one encode per broadcast and framing),
decoding on every client event. The peer is `socketio.packet.Packet` +
`engineio.packet.Packet` (python-socketio 5 / python-engineio 4, stdlib json,
their defaults), measured in the same process and run, so the ratio column
holds on any machine. Best of 5 timed rounds per cell.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

import engineio.packet as eio_peer
import socketio.packet as sio_peer

from pratico_daemon.protocol import jsonframe, socketio

NAMESPACE = "/pratico"
SMALL = (
    "chat_message",
    {
        "id": "m-18273",
        "participant_id": "p-42",
        "display_name": "Chloé",
        "text": "Je pense que la réponse est 42",
        "ts": "2026-11-22T06:00:00.123Z",
    },
)
LARGE = (
    "state",
    {
        "room": {"id": "r-1", "name": "algebre-lineaire"},
        "page": 7,
        "navigation_mode": "trainer",
        "participants": [
            {"participant_id": f"p-{i}", "display_name": f"Élève {i}", "connected": i % 3 != 0}
            for i in range(30)
        ],
        "scores": {f"p-{i}": i * 10 for i in range(30)},
    },
)


def ops_per_s(fn: Callable[[], object], seconds: float) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()  # calls that take >= 0.2 s
    number = max(1, int(number * seconds / 0.2))
    best = min(timer.repeat(repeat=5, number=number))
    return number / best


def peer_encode(name: str, payload: dict) -> str:
    packet = sio_peer.Packet(sio_peer.EVENT, data=[name, payload], namespace=NAMESPACE)
    return eio_peer.Packet(eio_peer.MESSAGE, data=packet.encode()).encode()


Row = tuple[str, float, float | None]


def rows_for(label: str, name: str, payload: dict, seconds: float) -> list[Row]:
    """The five measurements for one event: (operation, ours ops/s, peer ops/s or None)."""
    frame = socketio.encode_event_frame(NAMESPACE, name, payload)
    # Same packet as the peer's (its stdlib json adds spaces, so compare parsed).
    theirs = sio_peer.Packet(encoded_packet=peer_encode(name, payload)[1:])
    assert sio_peer.Packet(encoded_packet=frame[1:]).data == theirs.data
    client_text = "2" + NAMESPACE + ",17" + frame[len("42" + NAMESPACE + ",") :]
    json_text = jsonframe.encode_event(name, {**payload, "ref": 17})
    return [
        (
            f"Socket.IO encode, {label}",
            ops_per_s(lambda: socketio.encode_event_frame(NAMESPACE, name, payload), seconds),
            ops_per_s(lambda: peer_encode(name, payload), seconds),
        ),
        (
            f"Socket.IO encode bytes, {label}",
            ops_per_s(lambda: socketio.encode_event_frame_bytes(NAMESPACE, name, payload), seconds),
            None,
        ),
        (
            f"Socket.IO decode, {label}",
            ops_per_s(lambda: socketio.decode_packet(client_text), seconds),
            ops_per_s(lambda: sio_peer.Packet(encoded_packet=client_text), seconds),
        ),
        (
            f"JSON encode, {label}",
            ops_per_s(lambda: jsonframe.encode_event(name, payload), seconds),
            None,
        ),
        (
            f"JSON decode, {label}",
            ops_per_s(lambda: jsonframe.decode_frame(json_text, NAMESPACE), seconds),
            None,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="time per timed round")
    args = parser.parse_args()

    rows: list[Row] = []
    for label, (name, payload) in (("small event", SMALL), ("2 KB state", LARGE)):
        rows.extend(rows_for(label, name, payload, args.seconds))

    width = max(len(r[0]) for r in rows)
    print(f"{'operation':<{width}}  {'ours ops/s':>12}  {'python-socketio':>15}  {'ratio':>6}")
    for label, ours, peer in rows:
        peer_cell = f"{peer:>15,.0f}" if peer else f"{'-':>15}"
        ratio = f"{ours / peer:>5.1f}x" if peer else f"{'-':>6}"
        print(f"{label:<{width}}  {ours:>12,.0f}  {peer_cell}  {ratio}")
    print("ratio = ours / python-socketio, same process and run; '-' = no peer equivalent")


if __name__ == "__main__":
    main()
