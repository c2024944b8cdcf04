"""Socket.IO-over-WebSocket clients for bench/gateway_bench.py, one process per worker.

    python bench/gateway_clients.py members PORT ROOM:COUNT[,ROOM:COUNT...]
    python bench/gateway_clients.py senders PORT ROOM[,ROOM...]

The clients must cost far less than the servers they measure, and a thousand
of them must fit in one process, so they are not a Socket.IO library: raw
non-blocking sockets in one `selectors` loop, a per-connection state machine
that speaks just what the bench needs of Engine.IO v4 / Socket.IO v5 over
`/sockets/?EIO=4&transport=websocket` — the same bytes for the daemon and for
python-socketio, so the comparison is like for like:

    ← 0{"sid":…}          open packet          → 40/bench,          connect
    ← 40/bench,{…}        connected            → 42/bench,1["join",{"room":R}]
    ← 43/bench,1[…]       joined
    ← 2                   Engine.IO ping       → 3
    ← 42/bench,["said",{"room":…,"t":…},…]     a delivery: latency = now − t

Client frames are masked with the all-zero key (RFC 6455 allows any key; the
server still runs its unmasking), so a frame costs no per-byte Python work.

Control is line-based: the parent writes commands on stdin and reads progress
on stdout.

members: connects and joins (prints `joined N` while it goes, then `ready`),
then records the latency of every delivery in the current phase and prints
`count N T LAST` (deliveries so far, monotonic time now and of the last
delivery) every 0.2 s. Commands:
`phase NAME`, `report PATH` (writes `{phase: {"sent": [t, …], "latency":
[seconds, …]}}` as JSON, prints `reported`), `quit` (a Socket.IO disconnect
`41/bench,` per client, so the server forgets them at once instead of keeping
them for recovery).

senders: one connection per room, not a member of it. Commands:
`steady RATE SECONDS` (RATE `say` per second per room, staggered across
rooms) and `burst COUNT WINDOW` (COUNT `say` per room as fast as acks allow,
WINDOW unacknowledged at most); each prints `sent N` while it goes and
`finished N SECONDS`. Every `say` asks for an ack; `t` is time.monotonic()
just before the send (system-wide on Linux, so comparable across processes).
"""

from __future__ import annotations

import array
import json
import os
import selectors
import socket
import sys
import time
from collections.abc import Callable

NS = b"/bench"
PATH = "/sockets/?EIO=4&transport=websocket"
HANDSHAKES_IN_FLIGHT = 64
PROGRESS_EVERY_S = 0.2


def client_frame(payload: bytes) -> bytes:
    """A masked text frame with the zero key: header + key, payload unchanged."""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, 0x80 | n))
    elif n < 65536:
        head = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


PONG_EIO = client_frame(b"3")
CONNECT = client_frame(b"40" + NS + b",")
DISCONNECT = client_frame(b"41" + NS + b",")


def emit_frame(ack: int, name: str, payload: dict[str, object]) -> bytes:
    body = json.dumps([name, payload], separators=(",", ":")).encode()
    return client_frame(b"42" + NS + b"," + str(ack).encode() + body)


class Conn:
    """One client: socket, receive buffer, where it is in the connect sequence."""

    __slots__ = ("buf", "burst_sent", "room", "sock", "state")

    def __init__(self, sock: socket.socket, room: str) -> None:
        self.sock = sock
        self.room = room
        self.buf = bytearray()
        self.state = "http"  # http → open → connect → connected → joined
        self.burst_sent = 0

    def send(self, data: bytes) -> None:
        # Small frames to a loopback server: the kernel buffer takes them whole, and
        # a client that cannot write is a bench bug worth crashing on.
        self.sock.setblocking(True)
        self.sock.sendall(data)
        self.sock.setblocking(False)

    def frames(self) -> list[tuple[int, bytes]]:
        """The complete frames in the buffer (opcode, payload); server frames are unmasked."""
        buf = self.buf
        out = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            n = buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2:pos + 4], "big")
                head = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2:pos + 10], "big")
                head = 10
            if end - pos < head + n:
                break
            out.append((buf[pos] & 0x0F, bytes(buf[pos + head:pos + head + n])))
            pos += head + n
        if pos:
            del buf[:pos]
        return out


def upgrade_request(port: int, path: str = PATH) -> bytes:
    """The WebSocket handshake a bench client sends (a fixed key: the server checks its form)."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )


def open_socket(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(upgrade_request(port))
    sock.setblocking(False)
    return sock


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class Worker:
    """The selectors loop shared by both roles: sockets, stdin commands, progress."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sel = selectors.DefaultSelector()
        self.conns: dict[int, Conn] = {}
        self.stdin = b""
        self.running = True
        os.set_blocking(0, False)
        self.sel.register(0, selectors.EVENT_READ, None)

    def add(self, room: str) -> Conn:
        conn = Conn(open_socket(self.port), room)
        self.conns[conn.sock.fileno()] = conn
        self.sel.register(conn.sock, selectors.EVENT_READ, conn)
        return conn

    def poll(self, timeout: float, on_frame: Callable[[Conn, int, bytes, float], None],
             on_command: Callable[[list[str]], None]) -> None:
        for key, _ in self.sel.select(timeout):
            if not self.running:  # `quit` closed the sockets: nothing more to read
                return
            conn = key.data
            if conn is None:
                self._read_stdin(on_command)
                continue
            try:
                data = conn.sock.recv(1 << 18)
            except BlockingIOError:
                continue
            now = time.monotonic()
            if not data:
                raise SystemExit(f"server closed a connection in state {conn.state}")
            conn.buf += data
            if conn.state == "http":
                head, sep, _ = conn.buf.partition(b"\r\n\r\n")
                if not sep:
                    continue
                if not head.startswith(b"HTTP/1.1 101"):
                    raise SystemExit(f"handshake refused: {bytes(head[:60])!r}")
                del conn.buf[:len(head) + 4]
                conn.state = "open"
            for opcode, payload in conn.frames():
                if opcode == 0x9:  # a WebSocket ping (uvicorn sends them): pong it
                    conn.send(bytes((0x8A, 0x80 | len(payload))) + b"\0\0\0\0" + payload)
                elif opcode == 0x8:
                    raise SystemExit(f"server closed a connection: {payload[2:]!r}")
                elif payload == b"2":
                    conn.send(PONG_EIO)
                else:
                    on_frame(conn, opcode, payload, now)

    def _read_stdin(self, on_command: Callable[[list[str]], None]) -> None:
        chunk = os.read(0, 4096)
        if not chunk:  # the parent is gone
            raise SystemExit(0)
        self.stdin += chunk
        while b"\n" in self.stdin:
            line, self.stdin = self.stdin.split(b"\n", 1)
            if line.strip():
                on_command(line.decode().split())

    def connect_sequence(self, conn: Conn, payload: bytes) -> bool:
        """Advance the connect/join sequence; True when `payload` was part of it."""
        if conn.state == "open" and payload.startswith(b"0{"):
            conn.send(CONNECT)
            conn.state = "connect"
            return True
        if conn.state == "connect" and payload.startswith(b"40" + NS):
            conn.state = "connected"
            if conn.room:
                conn.send(emit_frame(1, "join", {"room": conn.room}))
            return True
        if payload.startswith(b"44" + NS):
            raise SystemExit(f"connect refused: {payload[:200]!r}")
        if conn.state == "connected" and payload.startswith(b"43" + NS + b",1["):
            conn.state = "joined"
            return True
        return False

    def goodbye(self) -> None:
        for conn in self.conns.values():
            try:
                conn.send(DISCONNECT)
                conn.sock.close()
            except OSError:
                pass
        self.running = False


def run_members(port: int, spec: str) -> None:
    rooms = []
    for item in spec.split(","):
        room, count = item.split(":")
        rooms += [room] * int(count)
    worker = Worker(port)
    # phase → (send times, latencies), both in seconds of time.monotonic()
    latencies: dict[str, tuple[array.array[float], array.array[float]]] = {}
    current: list[tuple[array.array[float], array.array[float]] | None] = [None]
    state = {"joined": 0, "count": 0}
    last_delivery = [0.0]

    def on_frame(conn: Conn, opcode: int, payload: bytes, now: float) -> None:
        if conn.state == "joined":
            # 42/bench,["said",{"room":"r0","t":123.456,…}…]: read t without a JSON parse.
            i = payload.find(b'"t":')
            if i < 0:
                return
            j = i + 4
            k = j
            while payload[k] not in b",}":
                k += 1
            state["count"] += 1
            last_delivery[0] = now
            sink = current[0]
            if sink is not None:
                sent = float(payload[j:k])
                sink[0].append(sent)
                sink[1].append(now - sent)
            return
        if worker.connect_sequence(conn, payload) and conn.state == "joined":
            state["joined"] += 1

    def on_command(words: list[str]) -> None:
        if words[0] == "phase":
            current[0] = latencies.setdefault(words[1], (array.array("d"), array.array("d")))
        elif words[0] == "report":
            with open(words[1], "w") as out:
                json.dump({name: {"sent": list(sent), "latency": list(latency)}
                           for name, (sent, latency) in latencies.items()}, out)
            say("reported")
        elif words[0] == "quit":
            worker.goodbye()

    pending = list(rooms)
    reported_joined = -1
    last_progress = 0.0
    while worker.running:
        while pending and len(worker.conns) - state["joined"] < HANDSHAKES_IN_FLIGHT:
            worker.add(pending.pop())
        worker.poll(PROGRESS_EVERY_S / 2, on_frame, on_command)
        now = time.monotonic()
        if now - last_progress >= PROGRESS_EVERY_S:
            last_progress = now
            if state["joined"] != reported_joined:
                reported_joined = state["joined"]
                say(f"joined {reported_joined}")
                if reported_joined == len(rooms):
                    say("ready")
            else:
                say(f"count {state['count']} {now:.6f} {last_delivery[0]:.6f}")


def run_senders(port: int, spec: str) -> None:
    worker = Worker(port)
    by_room = {room: worker.add("") for room in spec.split(",")}
    senders = list(by_room.values())
    plan: dict[str, float] = {}
    seq = {"ack": 1, "sent": 0, "acked": 0}
    outstanding = {id(c): 0 for c in senders}

    def send_say(conn: Conn, room: str) -> None:
        seq["ack"] += 1
        seq["sent"] += 1
        outstanding[id(conn)] += 1
        conn.send(emit_frame(seq["ack"], "say", {"room": room, "t": time.monotonic(),
                                                 "text": "hello everyone"}))

    def on_frame(conn: Conn, opcode: int, payload: bytes, now: float) -> None:
        if worker.connect_sequence(conn, payload):
            if all(c.state == "connected" for c in senders):
                say("ready")
            return
        if payload.startswith(b"43" + NS):
            outstanding[id(conn)] -= 1
            seq["acked"] += 1
            if b'"ERROR"' in payload:
                raise SystemExit(f"say refused: {payload[:200]!r}")

    def on_command(words: list[str]) -> None:
        if words[0] == "steady":
            plan.update(kind=1.0, rate=float(words[1]), seconds=float(words[2]),
                        start=time.monotonic(), count=0.0)
        elif words[0] == "burst":
            plan.update(kind=2.0, count=float(words[1]), window=float(words[2]),
                        start=time.monotonic())
            seq["sent"] = seq["acked"] = 0
        elif words[0] == "quit":
            worker.goodbye()

    rooms = list(by_room.items())
    last_progress = 0.0
    while worker.running:
        timeout = PROGRESS_EVERY_S / 2
        now = time.monotonic()
        if plan.get("kind") == 1.0:
            # Room k's i-th message is due at start + (i + k/len(rooms)) / rate.
            rate, start = plan["rate"], plan["start"]
            total = int(plan["seconds"] * rate) * len(rooms)
            while seq["sent"] < total:
                i, k = divmod(seq["sent"], len(rooms))
                due = start + (i + k / len(rooms)) / rate
                if due > now:
                    timeout = min(timeout, due - now)
                    break
                conn, room = rooms[k][1], rooms[k][0]
                send_say(conn, room)
            if seq["sent"] >= total and seq["acked"] >= total:
                say(f"finished {total} {time.monotonic() - start:.6f}")
                plan.clear()
                seq["sent"] = seq["acked"] = 0
        elif plan.get("kind") == 2.0:
            count, window = int(plan["count"]), int(plan["window"])
            for room, conn in rooms:
                while outstanding[id(conn)] < window and conn.burst_sent < count:
                    conn.burst_sent += 1
                    send_say(conn, room)
            if seq["acked"] >= count * len(rooms):
                say(f"finished {count * len(rooms)} {time.monotonic() - plan['start']:.6f}")
                plan.clear()
                for conn in senders:
                    conn.burst_sent = 0
                seq["sent"] = seq["acked"] = 0
        worker.poll(timeout, on_frame, on_command)
        if now - last_progress >= PROGRESS_EVERY_S and plan:
            last_progress = now
            say(f"sent {seq['sent']}")


def main() -> None:
    role, port, spec = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if role == "members":
        run_members(port, spec)
    elif role == "senders":
        run_senders(port, spec)
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main()
