"""The floor under "CPU per delivery": one `send` per delivery, and nothing else.

    .venv/bin/python bench/send_floor.py [--groups 4] [--members 250] [--rate 5]
                                         [--seconds 15] [--bytes 90] [--repeat 3]

The gateway bench's steady phase (bench/gateway_bench.py: 4 rooms × 250
members, 5 messages/s per room) costs any server at least one `send` system
call per delivery on its member's TCP socket. This bench measures that cost
alone, in the same pattern, with no server around it: a sender process holds
groups × members loopback TCP connections and, per group and `--rate` times a
second (groups out of step), writes one `--bytes` frame to each member's socket
in a plain Python loop of `socket.send`. A second process reads every
connection with a bare epoll loop, like the bench's clients. Then the same
frames back to back (a burst) for comparison.

Prints the sender's CPU per send (gateway_bench.schedstat: nanoseconds on
CPU) and its user/system split (os.times, tick-sampled). What it shows: on
loopback the sender's `send` also runs the receiver's TCP input in its own
softirq, so the kernel's part is the largest part of a delivery, for every
server; a server's CPU per delivery cannot go below this figure.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import sys
import time

from gateway_bench import schedstat


def receiver(port: int, count: int, ready_w: int) -> None:
    """Connect `count` sockets, then drain them until the sender closes them."""
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
    ep = select.epoll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    os.write(ready_w, b"r")
    open_count = count
    while open_count:
        for fd, _ in ep.poll():
            try:
                data = by_fd[fd].recv(65536)
            except BlockingIOError:
                continue
            if not data:
                ep.unregister(fd)
                by_fd[fd].close()
                open_count -= 1
    os._exit(0)


def measure(groups: list[list[socket.socket]], frame: bytes, rate: float | None,
            seconds: float) -> tuple[float, float, float, int]:
    """(CPU µs per send, user share, system share, sends); rate None = back to back."""
    sends = 0
    t0, cpu0, times0 = time.perf_counter(), schedstat(os.getpid())[0], os.times()
    if rate is None:
        end = t0 + seconds
        while time.perf_counter() < end:
            for members in groups:
                for s in members:
                    s.send(frame)
                sends += len(members)
    else:
        period = 1 / rate
        # Group g sends at g/len(groups) of the period: rooms out of step.
        due = [t0 + period * g / len(groups) for g in range(len(groups))]
        end = t0 + seconds
        while True:
            g = min(range(len(groups)), key=due.__getitem__)
            if due[g] >= end:
                break
            delay = due[g] - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            for s in groups[g]:
                s.send(frame)
            sends += len(groups[g])
            due[g] += period
    cpu = schedstat(os.getpid())[0] - cpu0
    times1 = os.times()
    user = times1.user - times0.user
    system = times1.system - times0.system
    both = max(1e-9, user + system)
    return cpu / sends * 1e6, user / both, system / both, sends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--members", type=int, default=250)
    parser.add_argument("--rate", type=float, default=5.0, help="sends per second per group")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--burst-seconds", type=float, default=3.0)
    parser.add_argument("--bytes", type=int, default=90, help="frame size (a broadcast frame)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    count = args.groups * args.members
    frame = b"\x81" + bytes([args.bytes - 2]) + b"x" * (args.bytes - 2)

    listener = socket.create_server(("127.0.0.1", 0), backlog=count)
    port = listener.getsockname()[1]
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:
        listener.close()
        receiver(port, count, ready_w)
    accepted = []
    for _ in range(count):
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.setblocking(True)
        accepted.append(conn)
    os.read(ready_r, 1)
    groups = [accepted[g * args.members:(g + 1) * args.members] for g in range(args.groups)]

    rows = []
    for _ in range(args.repeat):
        rows.append(("steady", *measure(groups, frame, args.rate, args.seconds)))
        rows.append(("burst", *measure(groups, frame, None, args.burst_seconds)))
    for conn in accepted:
        conn.close()
    os.waitpid(child, 0)

    print(f"\nOne `send` per delivery, {args.groups} groups × {args.members} loopback TCP "
          f"connections, {args.bytes}-byte frames; steady: {args.rate:g}/s per group for "
          f"{args.seconds:g} s; burst: back to back for {args.burst_seconds:g} s; "
          f"{args.repeat} rounds\n")
    print("| phase  | CPU µs per send (median) | min–max     | user % | system % | sends |")
    print("|--------|-------------------------:|-------------|-------:|---------:|------:|")
    for phase in ("steady", "burst"):
        mine = [r for r in rows if r[0] == phase]
        cpu = [r[1] for r in mine]
        user = 100 * statistics.mean(r[2] for r in mine)
        system = 100 * statistics.mean(r[3] for r in mine)
        print(f"| {phase:<6} | {statistics.median(cpu):>24.1f} | "
              f"{min(cpu):>4.1f}–{max(cpu):<6.1f} | {user:>6.0f} | {system:>8.0f} "
              f"| {sum(r[4] for r in mine):>5} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
