"""Which WebSocket server side to build the transport on: measure, then choose.

    .venv/bin/python bench/ws_server_compare.py [--seconds 2] [--conns 1000] [--rounds 50]
                                                [--repeat 3] [--variants a,b,...]

Each candidate server (bench/peers/ws_servers.py) runs in its own process; the
clients (bench/ws_clients.py, raw sockets, far cheaper than any server) run in
other processes, so the server's core is spent on the server only. Scenarios:

- echo: one connection, 48-byte text messages: p50/p99 with one in flight, and
  messages/s with batches of 32 in flight (the server's CPU cost per message).
- fan-out: CONNS connections in two client processes; a controller asks for
  ROUNDS broadcasts of one 48-byte message to all of them; deliveries/s is
  CONNS × ROUNDS over the time from the request to the last byte received.

Each candidate runs --repeat times, round-robin, and keeps its best figures
(the machine is shared). Prints one table with each candidate's ratio to
trio-websocket, measured in the same run. docs/discussion/websocket-server.md
quotes a run and explains the choice.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ws_clients import connect, masked_text_frame  # noqa: E402

VARIANTS = ["trio-websocket", "hypercorn", "wsproto", "websockets", "wsproto-await", "pratico"]
PY = sys.executable


def start_server(variant: str) -> tuple[subprocess.Popen[str], int]:
    # Pinned apart: on 2 cores, a ping-pong whose ends share a core is 4x faster
    # than one crossing cores, and the kernel picks either at random.
    proc = subprocess.Popen(
        ["taskset", "-c", "0", PY, str(HERE / "peers" / "ws_servers.py"), variant],
        stdout=subprocess.PIPE, text=True, cwd=HERE.parent,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, port


def run_echo(port: int, seconds: float) -> tuple[float, int, int]:
    out = subprocess.run(
        [PY, str(HERE / "ws_clients.py"), "echo", str(port), str(seconds)],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    return float(out[0]), int(out[1]), int(out[2])


def run_fanout(port: int, conns: int, rounds: int) -> float:
    per = conns // 2
    clients = [
        subprocess.Popen(
            [PY, str(HERE / "ws_clients.py"), "fanout", str(port), str(per), str(rounds)],
            stdout=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    for c in clients:
        assert c.stdout is not None
        assert c.stdout.readline().strip() == "ready"
    control = connect(port)
    time.sleep(0.3)  # let the server settle after 1,000 handshakes
    start = time.monotonic()
    control.sendall(masked_text_frame(f"bcast {rounds}".encode()))
    ends = []
    for c in clients:
        assert c.stdout is not None
        ends.append(float(c.stdout.readline()))
        c.wait()
    control.close()
    return per * 2 * rounds / (max(ends) - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    variants = args.variants.split(",")
    best: dict[str, tuple[float, int, int, float]] = {}
    # Round-robin repeats, best of each: a burst of load from elsewhere on a shared
    # machine then hurts one run of every candidate, not every run of one candidate.
    for attempt in range(args.repeat):
        for variant in variants:
            proc, port = start_server(variant)
            try:
                rate, p50, p99 = run_echo(port, args.seconds)
                fan = run_fanout(port, args.conns, args.rounds)
            finally:
                proc.kill()
                proc.wait()
            old = best.get(variant, (0.0, 10**9, 10**9, 0.0))
            best[variant] = (max(old[0], rate), min(old[1], p50), min(old[2], p99),
                             max(old[3], fan))
            print(f"  run {attempt + 1}/{args.repeat} {variant}: echo {rate:,.0f}/s, "
                  f"fan-out {fan:,.0f}/s", file=sys.stderr, flush=True)
    rows = [(v, *best[v]) for v in variants]
    base = {r[0]: r for r in rows}.get("trio-websocket", rows[0])
    print(f"\n{'server':<16}{'echo msg/s':>12}{'ratio':>7}{'p50 µs':>8}{'p99 µs':>8}"
          f"{'fan-out deliveries/s':>22}{'ratio':>7}")
    for variant, rate, p50, p99, fan in rows:
        print(f"{variant:<16}{rate:>12,.0f}{rate / base[1]:>7.1f}{p50:>8}{p99:>8}"
              f"{fan:>22,.0f}{fan / base[4]:>7.1f}")


if __name__ == "__main__":
    main()
