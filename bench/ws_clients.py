"""Raw-socket WebSocket clients for bench/ws_server_compare.py (run in their own processes).

The clients must cost far less than the servers they measure, so they are
plain blocking/`selectors` sockets with pre-masked frames: the echo client
sends one frame and reads the 50-byte reply (latency), then batches of 32
(throughput: what the server's CPU allows); the broadcast client only counts
bytes (every broadcast frame has the same known length).

    python bench/ws_clients.py echo PORT SECONDS        -> prints "msgs_per_s p50_us p99_us"
    python bench/ws_clients.py fanout PORT CONNS N      -> prints "ready", later the
                                                          monotonic time its last byte came
"""

from __future__ import annotations

import os
import selectors
import socket
import sys
import time

PATH = "/ws/bench"
MASK = b"\x37\xfa\x21\x3d"
PAYLOAD = b"x" * 48
REPLY_LEN = 2 + len(PAYLOAD)
BATCH = 32
SERVER_CPU, CLIENT_CPU = 0, 1  # 2 cores: the server gets one to itself


def masked_text_frame(payload: bytes) -> bytes:
    assert len(payload) < 126
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + MASK + masked


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(
        f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise SystemExit("handshake refused")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"handshake refused: {head[:40]!r}")
    return sock


def echo(port: int, seconds: float) -> None:
    """Half the time one message in flight (latency), half batches of 32 (throughput)."""
    sock = connect(port)
    frame = masked_text_frame(PAYLOAD)
    latencies: list[int] = []
    deadline = time.perf_counter() + seconds / 2
    while (start := time.perf_counter_ns()) < deadline * 1e9:
        sock.sendall(frame)
        got = 0
        while got < REPLY_LEN:
            got += len(sock.recv(4096))
        latencies.append((time.perf_counter_ns() - start) // 1000)
    latencies.sort()
    n = len(latencies)
    batch = frame * BATCH
    count = 0
    start_s = time.perf_counter()
    deadline = start_s + seconds / 2
    while time.perf_counter() < deadline:
        sock.sendall(batch)
        got = 0
        while got < REPLY_LEN * BATCH:
            got += len(sock.recv(65536))
        count += BATCH
    rate = count / (time.perf_counter() - start_s)
    print(rate, latencies[n // 2], latencies[n * 99 // 100], flush=True)


def fanout(port: int, conns: int, n: int) -> None:
    socks = [connect(port) for _ in range(conns)]
    expected = n * REPLY_LEN
    remaining = {s.fileno(): expected for s in socks}
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    print("ready", flush=True)
    last = time.monotonic()
    while remaining:
        for key, _ in sel.select(timeout=60):
            sock = key.fileobj
            data = sock.recv(1 << 20)  # type: ignore[union-attr]
            if not data:
                raise SystemExit("server closed a connection")
            fd = key.fd
            remaining[fd] -= len(data)
            if remaining[fd] <= 0:
                del remaining[fd]
                sel.unregister(sock)
            last = time.monotonic()
    print(last, flush=True)
    os._exit(0)


if __name__ == "__main__":
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > 1:  # type: ignore[operator]
        os.sched_setaffinity(0, {CLIENT_CPU})
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "echo":
        echo(port, float(sys.argv[3]))
    else:
        fanout(port, int(sys.argv[3]), int(sys.argv[4]))
