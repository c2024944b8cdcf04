"""The gateway under many clients, against python-socketio in the same run (issue 4).

    .venv/bin/python bench/gateway_bench.py [--clients 2000] [--rooms 4] [--members 250]
        [--rate 5] [--seconds 15] [--burst 60] [--window 4] [--peers python-socketio,node]
        [--repeat 1] [--pin] [--nice N] [--profile]

For each server in turn — the daemon (bench/gateway_bench_server.py: a real
`Daemon`, embedded mode, a "/bench" namespace), python-socketio under uvicorn
+ uvloop (bench/peers/socketio_peer.py) and, when its node_modules exist,
Node's socket.io (bench/peers/node/) — the same scenario, with the same
clients speaking Socket.IO over WebSocket (bench/gateway_clients.py):

1. warm-up: 20 clients connect, join, and leave (first-use allocations and
   lazy imports are not charged to the connections measured next);
2. idle memory: `--clients` clients connect and join a room (the first
   rooms × members join the "active" rooms r0…, the rest idle rooms); server
   RSS after − before, divided by the number of clients;
3. steady: one sender connection per active room emits `say` at `--rate`
   per second per room for `--seconds`; each is broadcast to the room's
   members. Delivery latency = receive time − send time (time.monotonic(),
   system-wide on Linux); server CPU time / deliveries;
4. burst: each sender emits `--burst` messages as fast as acks allow
   (`--window` in flight): the deliveries/s a server sustains, and its CPU per
   delivery when busy.

The machine is shared, so the figures that matter are the server's CPU time
(from /proc/PID/task/*/schedstat, nanoseconds on CPU, whatever else runs)
and RSS (/proc/PID/status), and ratios between servers measured in the same
run. The kernel places the processes: on two cores, pinning the clients to
one core (--pin: server on CPU 0, clients on CPU 1, as in
bench/ws_server_compare.py) makes the clients' own queueing the floor of the
latency; --nice -10 (root) gives servers and clients a larger share against
neighbours, equally for every server.

Prints a table (daemon, each peer, and the daemon's gain over each: how
many times better, > 1 when the daemon wins) and writes
bench/results/gateway-bench-<time>.{png,json}: the steady phase's latency
distribution, each delivery's latency by send time, the server's run-queue
wait over time, and deliveries/s over both phases. --profile runs cProfile
in the daemon during the traffic phases and prints where its time went (the
stats file is kept in bench/results/). Every phase is bounded in time; the
whole run takes 3–4 minutes with the defaults.
docs/discussion/gateway-benchmark.md quotes runs and reads them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import trio
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PY = sys.executable
MEMBER_WORKERS = 2
WARMUP_CLIENTS = 20
SAMPLE_S = 0.1
SERVER_CPU, CLIENT_CPU = "0", "1"


@attrs.frozen
class ServerKind:
    name: str
    command: list[str]


def server_kinds(peers: list[str], profile_path: Path | None) -> list[ServerKind]:
    daemon = [PY, str(HERE / "gateway_bench_server.py")]
    if profile_path is not None:
        daemon += ["--profile", str(profile_path)]
    kinds = [ServerKind("pratico-daemon", daemon)]
    if "python-socketio" in peers:
        kinds.append(ServerKind("python-socketio", [PY, str(HERE / "peers" / "socketio_peer.py")]))
    if "node" in peers:
        node_dir = HERE / "peers" / "node"
        if (node_dir / "node_modules" / "socket.io").is_dir():
            kinds.append(ServerKind("node socket.io", ["node", str(node_dir / "server.js")]))
        else:
            print(f"skipping node: run `npm install` in {node_dir} first", file=sys.stderr)
    return kinds


# -- /proc ------------------------------------------------------------------------------------


def schedstat(pid: int) -> tuple[float, float]:
    """(CPU time, run-queue wait) of every thread of `pid` so far, in seconds.

    /proc/PID/task/*/schedstat: nanoseconds on a CPU, nanoseconds runnable but
    waiting for one. The wait says how much the neighbours on a shared machine
    delayed a process — what a latency percentile cannot tell apart.
    """
    cpu = wait = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                fields = f.read().split()
        except FileNotFoundError:  # a thread that just ended
            continue
        cpu += int(fields[0])
        wait += int(fields[1])
    return cpu / 1e9, wait / 1e9


def user_system_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of `pid` (/proc/PID/stat, clock ticks): where the CPU went."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


# -- child processes ----------------------------------------------------------------------------


class Child:
    """A child process spoken to in lines: commands on stdin, progress on stdout.

    Every child exits when its stdin closes, so an interrupted bench leaves no
    server or client behind. (PR_SET_PDEATHSIG would not do: trio starts
    processes from a worker thread, and the signal fires when that thread ends.)
    """

    def __init__(self, process: trio.Process, name: str) -> None:
        self.process = process
        self.name = name
        self._buffer = b""

    @classmethod
    async def start(cls, command: list[str], name: str, cpu: str | None, nice: int = 0) -> Child:
        if cpu is not None:
            command = ["taskset", "-c", cpu, *command]
        if nice:
            command = ["nice", "-n", str(nice), *command]
        process = await trio.lowlevel.open_process(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=HERE.parent,
        )
        return cls(process, name)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def line(self) -> str:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                code = await self.process.wait()
                raise RuntimeError(f"{self.name} exited ({code}) before answering")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode().strip()

    async def send(self, text: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(text.encode() + b"\n")

    async def wait_for(self, prefix: str) -> list[str]:
        while True:
            words = (await self.line()).split()
            if words and words[0] == prefix:
                return words

    async def stop(self, grace_s: float = 0.0) -> None:
        """Close its stdin (every child exits on that) and wait `grace_s`, then kill."""
        if grace_s and self.process.returncode is None:
            assert self.process.stdin is not None
            await self.process.stdin.aclose()
            with trio.move_on_after(grace_s):
                await self.process.wait()
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


class Members:
    """The member workers: a reader task per worker keeps the counts current."""

    def __init__(self, workers: list[Child]) -> None:
        self.workers = workers
        self.joined = [0] * len(workers)
        self.counts = [0] * len(workers)
        self.ready = [False] * len(workers)
        self.reported = trio.Semaphore(0)
        self.timeline: list[tuple[float, int, int]] = []  # (time, worker, its count)
        self.last_delivery = 0.0

    async def follow(self, index: int) -> None:
        worker = self.workers[index]
        while True:
            words = (await worker.line()).split()
            if words[0] == "joined":
                self.joined[index] = int(words[1])
            elif words[0] == "ready":
                self.ready[index] = True
            elif words[0] == "count":
                self.counts[index] = int(words[1])
                self.timeline.append((float(words[2]), index, self.counts[index]))
                self.last_delivery = max(self.last_delivery, float(words[3]))
            elif words[0] == "reported":
                self.reported.release()

    @property
    def total(self) -> int:
        return sum(self.counts)

    async def broadcast(self, text: str) -> None:
        for worker in self.workers:
            await worker.send(text)


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str,
                     bar: tqdm | None = None, value: Callable[[], int] | None = None) -> bool:
    """Poll `predicate` every 50 ms; False (and a note) if it is still false at the deadline."""
    with trio.move_on_after(timeout_s):
        while not predicate():
            if bar is not None and value is not None:
                bar.update(value() - bar.n)
            await trio.sleep(0.05)
        if bar is not None and value is not None:
            bar.update(value() - bar.n)
        return True
    tqdm.write(f"  timed out after {timeout_s:.0f}s waiting for {what}")
    return False


# -- one server ----------------------------------------------------------------------------------


@attrs.define
class PhaseResult:
    name: str = ""
    sent: int = 0
    expected: int = 0
    start: float = 0.0
    deliveries: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0
    user_s: float = 0.0
    system_s: float = 0.0
    gc: dict[str, list[float]] = attrs.Factory(dict)
    server_wait_s: float = 0.0
    clients_wait_s: float = 0.0
    latencies: list[float] = attrs.Factory(list)
    sent_times: list[float] = attrs.Factory(list)  # of each latency's message
    # (time, server CPU s, server run-queue wait s) every SAMPLE_S: when it was starved
    samples: list[tuple[float, float, float]] = attrs.Factory(list)

    @property
    def cpu_us_per_delivery(self) -> float:
        return self.cpu_s / self.deliveries * 1e6 if self.deliveries else math.nan

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds if self.seconds else math.nan

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000


@attrs.define
class ServerResult:
    name: str
    clients: int = 0
    rss_before: int = 0
    rss_joined: int = 0
    rss_after: int = 0
    connect_s: float = 0.0
    steady: PhaseResult = attrs.Factory(PhaseResult)
    burst: PhaseResult = attrs.Factory(PhaseResult)
    timeline: list[tuple[float, int, int]] = attrs.Factory(list)
    phase_starts: dict[str, float] = attrs.Factory(dict)

    def rate_series(self, step: float = 0.25) -> tuple[list[float], list[float]]:
        """Deliveries/s in `step` windows from the steady phase on (x: s since its start)."""
        if not self.timeline or "steady" not in self.phase_starts:
            return [], []
        t0 = self.phase_starts["steady"]
        last: dict[int, int] = {}
        xs: list[float] = []
        ys: list[float] = []
        edge, previous = t0 + step, None
        for t, worker, count in sorted(self.timeline):
            while t >= edge:
                total = sum(last.values())
                if previous is not None:
                    xs.append(edge - t0)
                    ys.append((total - previous) / step)
                previous, edge = total, edge + step
            if t >= t0 - step:
                last[worker] = count
        return xs, ys

    @property
    def rss_per_client(self) -> float:
        return (self.rss_joined - self.rss_before) / self.clients if self.clients else math.nan


def room_plan(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Per member worker, its `ROOM:COUNT,…` spec; and the active rooms."""
    active = [f"r{i}" for i in range(args.rooms)]
    counts: dict[str, int] = dict.fromkeys(active, args.members)
    idle = args.clients - args.rooms * args.members
    if idle < 0:
        raise SystemExit("--clients must be at least --rooms × --members")
    for i in range(math.ceil(idle / args.members)):
        counts[f"idle{i}"] = min(args.members, idle - i * args.members)
    specs = []
    for w in range(MEMBER_WORKERS):
        share = {room: n // MEMBER_WORKERS + (1 if w < n % MEMBER_WORKERS else 0)
                 for room, n in counts.items()}
        specs.append(",".join(f"{room}:{n}" for room, n in share.items() if n))
    return specs, active


async def run_server(kind: ServerKind, args: argparse.Namespace, tmp: Path) -> ServerResult:
    result = ServerResult(kind.name, clients=args.clients)
    client_cpu = CLIENT_CPU if args.pin else None
    clients_cmd = [PY, str(HERE / "gateway_clients.py")]
    server = await Child.start(kind.command, kind.name, SERVER_CPU if args.pin else None,
                               args.nice)
    try:
        with trio.fail_after(30):
            port = int(await server.line())
        pid = server.pid

        # 1. warm-up
        warm = await Child.start([*clients_cmd, "members", str(port), f"warm:{WARMUP_CLIENTS}"],
                                 "warm-up", client_cpu, args.nice)
        with trio.fail_after(30):
            await warm.wait_for("ready")
        await warm.send("quit")
        with trio.fail_after(10):
            await warm.process.wait()
        await trio.sleep(1.0)
        result.rss_before = rss_bytes(pid)

        # 2. idle joined connections
        specs, active = room_plan(args)
        workers = [
            await Child.start([*clients_cmd, "members", str(port), spec], f"members {i}",
                              client_cpu, args.nice)
            for i, spec in enumerate(specs)
        ]
        members = Members(workers)
        senders = await Child.start([*clients_cmd, "senders", str(port), ",".join(active)],
                                    "senders", client_cpu, args.nice)
        async with trio.open_nursery() as nursery:
            for i in range(len(workers)):
                nursery.start_soon(members.follow, i)
            start = time.monotonic()
            with tqdm(total=args.clients, desc=f"{kind.name}: connect+join", unit="conn",
                      leave=False) as bar:
                if not await wait_until(lambda: all(members.ready), 120, "joins", bar,
                                        lambda: sum(members.joined)):
                    raise RuntimeError(f"only {sum(members.joined)} clients joined")
            result.connect_s = time.monotonic() - start
            await trio.sleep(1.5)  # let the last handshakes' garbage be collected
            result.rss_joined = rss_bytes(pid)
            with trio.fail_after(30):
                await senders.wait_for("ready")

            if args.profile and kind.name.startswith("pratico"):
                await server.send("profile on")
            # 3. steady
            result.steady = await run_phase(
                "steady", f"steady {args.rate} {args.seconds}", server, members, senders, args,
                total_sent=int(args.seconds * args.rate) * args.rooms)
            # 4. burst
            result.burst = await run_phase(
                "burst", f"burst {args.burst} {args.window}", server, members, senders, args,
                total_sent=args.burst * args.rooms)
            result.rss_after = rss_bytes(pid)
            if args.profile and kind.name.startswith("pratico"):
                await server.send("profile off")

            # latencies back from the workers
            slug = "".join(c if c.isalnum() else "-" for c in kind.name)
            paths = [tmp / f"{slug}-{i}.json" for i in range(len(workers))]
            for worker, path in zip(workers, paths, strict=True):
                await worker.send(f"report {path}")
            with trio.fail_after(30):
                for _ in workers:
                    await members.reported.acquire()
            for path in paths:
                data = json.loads(path.read_text())
                for phase in (result.steady, result.burst):
                    got = data.get(phase.name, {"sent": [], "latency": []})
                    phase.sent_times += got["sent"]
                    phase.latencies += got["latency"]
            result.timeline = list(members.timeline)
            result.phase_starts = {"steady": result.steady.start, "burst": result.burst.start}
            # Stop following before the workers quit: their exit is not an error now.
            nursery.cancel_scope.cancel()
        for child in [*workers, senders]:
            await child.send("quit")
        for child in [*workers, senders]:
            with trio.move_on_after(5):
                await child.process.wait()
            await child.stop()
    finally:
        await server.stop(grace_s=15.0 if args.profile else 0.0)
    return result


async def gc_pauses(server: Child) -> dict[str, list[float]]:
    """The daemon's GC pauses since the last call; {} for peers (they do not answer `gc`)."""
    if not server.name.startswith("pratico"):
        return {}
    await server.send("gc")
    with trio.fail_after(10):
        return json.loads(await server.line())  # type: ignore[no-any-return]


async def run_phase(name: str, command: str, server: Child, members: Members, senders: Child,
                    args: argparse.Namespace, total_sent: int) -> PhaseResult:
    pid = server.pid
    phase = PhaseResult(sent=total_sent, expected=total_sent * args.members, name=name)
    await members.broadcast(f"phase {name}")
    await trio.sleep(0.3)  # the workers switch phase before the first message
    base = members.total
    client_pids = [w.pid for w in members.workers] + [senders.pid]
    await gc_pauses(server)  # starts counting afresh
    cpu0, wait0 = schedstat(pid)
    user0, system0 = user_system_seconds(pid)
    clients_wait0 = sum(schedstat(p)[1] for p in client_pids)
    t0 = phase.start = time.monotonic()
    await senders.send(command)
    limit = (args.seconds + 60) if name == "steady" else 120
    finished = trio.Event()

    async def wait_finished() -> None:
        await senders.wait_for("finished")
        finished.set()

    async def sample() -> None:
        while True:
            phase.samples.append((time.monotonic(), *schedstat(pid)))
            await trio.sleep(SAMPLE_S)

    delivered = lambda: members.total - base  # noqa: E731
    with tqdm(total=phase.expected, desc=f"  {name}", unit="dlv", leave=False) as bar:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            async with trio.open_nursery() as waiting:
                waiting.start_soon(wait_finished)
                if not await wait_until(finished.is_set, limit, f"{name} acks", bar,
                                        delivered):
                    raise RuntimeError(f"{name}: the senders did not finish")
            nursery.cancel_scope.cancel()
        # Every ack is in; the broadcasts may still be on their way to some members.
        await wait_until(lambda: delivered() >= phase.expected, 20,
                         f"{name} deliveries", bar, delivered)
        await trio.sleep(0.3)  # the workers' next progress line carries the last delivery
    cpu1, wait1 = schedstat(pid)
    user1, system1 = user_system_seconds(pid)
    phase.user_s, phase.system_s = user1 - user0, system1 - system0
    phase.gc = await gc_pauses(server)
    phase.cpu_s = cpu1 - cpu0
    phase.server_wait_s = wait1 - wait0
    phase.clients_wait_s = sum(schedstat(p)[1] for p in client_pids) - clients_wait0
    phase.deliveries = delivered()
    phase.seconds = max(members.last_delivery - t0, 1e-9)
    return phase


# -- report -------------------------------------------------------------------------------------


@attrs.frozen
class Row:
    label: str
    unit: str
    get: Callable[[ServerResult], float]
    fmt: str
    higher_is_better: bool = False
    compare: bool = True


ROWS = [
    Row("CPU per delivery, steady", "µs", lambda r: r.steady.cpu_us_per_delivery, ".1f"),
    Row("CPU per delivery, burst", "µs", lambda r: r.burst.cpu_us_per_delivery, ".1f"),
    Row("RSS per idle joined connection", "KiB", lambda r: r.rss_per_client / 1024, ".1f"),
    Row("delivery p50, steady", "ms", lambda r: r.steady.percentile(50), ".2f"),
    Row("delivery p99, steady", "ms", lambda r: r.steady.percentile(99), ".2f"),
    Row("delivery max, steady", "ms", lambda r: r.steady.percentile(100), ".1f"),
    Row("deliveries/s, burst", "/s", lambda r: r.burst.rate, ",.0f", higher_is_better=True),
    Row("delivery p99, burst", "ms", lambda r: r.burst.percentile(99), ".1f"),
    Row("server CPU busy, steady", "%", lambda r: 100 * r.steady.cpu_s / r.steady.seconds,
        ".0f", compare=False),
    Row("  of which in the kernel (system)", "%",
        lambda r: 100 * r.steady.system_s / max(1e-9, r.steady.user_s + r.steady.system_s),
        ".0f", compare=False),
    Row("server run-queue wait, steady", "ms/s",
        lambda r: 1000 * r.steady.server_wait_s / r.steady.seconds, ".0f", compare=False),
    Row("clients run-queue wait, steady", "ms/s",
        lambda r: 1000 * r.steady.clients_wait_s / r.steady.seconds, ".0f", compare=False),
    Row("deliveries received/expected", "%",
        lambda r: 100 * (r.steady.deliveries + r.burst.deliveries)
        / max(1, r.steady.expected + r.burst.expected), ".1f", compare=False),
    Row("connect + join (all clients)", "s", lambda r: r.connect_s, ".1f"),
    Row("RSS after joins", "MiB", lambda r: r.rss_joined / 2**20, ".1f"),
    Row("RSS after traffic", "MiB", lambda r: r.rss_after / 2**20, ".1f"),
]


def best_of(runs: list[ServerResult]) -> ServerResult:
    """The run with the lowest steady CPU per delivery (the least disturbed by neighbours)."""
    return min(runs, key=lambda r: r.steady.cpu_us_per_delivery)


def gain(row: Row, ours: float, theirs: float) -> float:
    """How many times better the daemon is than the peer on this row (> 1: better)."""
    if not row.compare or not ours or not theirs or math.isnan(ours) or math.isnan(theirs):
        return math.nan
    return ours / theirs if row.higher_is_better else theirs / ours


def table(results: list[ServerResult]) -> str:
    daemon, peers = results[0], results[1:]
    header = f"{'':<32}{'unit':>5}{daemon.name:>16}"
    for peer in peers:
        header += f"{peer.name:>17}{'gain':>6}"
    lines = [header]
    for row in ROWS:
        ours = row.get(daemon)
        line = f"{row.label:<32}{row.unit:>5}{format(ours, row.fmt):>16}"
        for peer in peers:
            theirs = row.get(peer)
            ratio = gain(row, ours, theirs)
            shown = "" if math.isnan(ratio) else f"{ratio:.1f}"
            line += f"{format(theirs, row.fmt):>17}{shown:>6}"
        lines.append(line)
    return "\n".join(lines)


def plot(results: list[ServerResult], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ((cdf, rate), (over_time, starved)) = plt.subplots(2, 2, figsize=(13, 9))
    for r in results:
        ordered = sorted(r.steady.latencies)
        if ordered:
            n = len(ordered)
            cdf.plot([v * 1000 for v in ordered], [i / n for i in range(n)],
                     label=f"{r.name} (p99 {r.steady.percentile(99):.1f} ms)")
        if r.steady.sent_times:
            start = r.steady.start
            over_time.scatter([t - start for t in r.steady.sent_times],
                              [v * 1000 for v in r.steady.latencies], s=1, alpha=0.3,
                              label=r.name)
        points = r.steady.samples
        if len(points) > 1:
            start = r.steady.start
            waits = [(b[2] - a[2]) / (b[0] - a[0]) * 100 for a, b in itertools.pairwise(points)]
            starved.plot([b[0] - start for b in points[1:]], waits, label=r.name, linewidth=0.8)
        xs, ys = r.rate_series()
        line = rate.plot(xs, ys, label=r.name)[0]
        if "burst" in r.phase_starts:
            rate.axvline(r.phase_starts["burst"] - r.phase_starts["steady"],
                         color=line.get_color(), linestyle=":", linewidth=0.8)
    cdf.set_xscale("log")
    cdf.axvline(15, color="grey", linestyle=":", label="goal p99 15 ms")
    cdf.axhline(0.99, color="grey", linestyle="--", linewidth=0.5)
    cdf.set_xlabel("delivery latency (ms, log)")
    cdf.set_ylabel("fraction of deliveries")
    cdf.set_title(f"steady: {args.rooms} rooms × {args.members} members, "
                  f"{args.rate:g} msg/s per room")
    cdf.legend()
    rate.set_xlabel("time since the steady phase began (s); dotted: the burst begins")
    rate.set_ylabel("deliveries/s (0.25 s windows)")
    rate.set_title(f"steady {args.seconds:g} s, then a burst of {args.burst} msg per room")
    rate.legend()
    over_time.set_yscale("log")
    over_time.set_xlabel("send time since the steady phase began (s)")
    over_time.set_ylabel("delivery latency (ms, log)")
    over_time.set_title("steady: every delivery's latency by when its message was sent")
    over_time.legend(markerscale=8)
    starved.set_xlabel("time since the steady phase began (s)")
    starved.set_ylabel(f"% of each {SAMPLE_S:g} s runnable but waiting for a CPU")
    starved.set_title("steady: the server's run-queue wait (neighbours on a shared machine)")
    starved.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def print_profile(path: Path) -> None:
    """Where the daemon's time went during the traffic phases (cProfile: wall time)."""
    stats = pstats.Stats(str(path))
    print(f"\ndaemon profile of the traffic phases ({path}), top functions by own time:")
    stats.sort_stats("tottime").print_stats(25)
    print("by cumulative time:")
    stats.sort_stats("cumulative").print_stats(30)


async def main_async(args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    profile_path = RESULTS / f"gateway-bench-{stamp}.prof" if args.profile else None
    kinds = server_kinds(args.peers.split(",") if args.peers else [], profile_path)
    runs: dict[str, list[ServerResult]] = {k.name: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        for attempt in range(args.repeat):
            # Round-robin: a burst of load from a neighbour hurts one run of each
            # server rather than every run of one server.
            for kind in kinds:
                result = await run_server(kind, args, Path(tmp))
                runs[kind.name].append(result)
                tqdm.write(
                    f"run {attempt + 1}/{args.repeat} {kind.name}: "
                    f"{result.steady.cpu_us_per_delivery:.1f} µs CPU/delivery, "
                    f"{result.rss_per_client / 1024:.1f} KiB/conn, "
                    f"p99 {result.steady.percentile(99):.1f} ms, "
                    f"burst {result.burst.rate:,.0f} deliveries/s")
    results = [best_of(runs[k.name]) for k in kinds]
    print(f"\n{args.clients} clients, {args.rooms} active rooms × {args.members} members, "
          f"{args.rate:g} msg/s per room for {args.seconds:g} s, then a burst of "
          f"{args.burst} msg per room ({args.window} in flight); "
          f"load average {os.getloadavg()[0]:.1f}; gain = how many times better the "
          "daemon is (peer/daemon for costs, daemon/peer for rates)")
    print(table(results))
    png = RESULTS / f"gateway-bench-{stamp}.png"
    plot(results, png, args)
    summary = {r.name: {**{row.label: row.get(r) for row in ROWS},
                        "gc_steady": r.steady.gc, "gc_burst": r.burst.gc} for r in results}
    (RESULTS / f"gateway-bench-{stamp}.json").write_text(
        json.dumps({"args": vars(args), "results": summary}, indent=1))
    daemon = results[0]
    for phase in (daemon.steady, daemon.burst):
        if phase.gc:
            print(f"daemon GC during {phase.name}: collections per generation "
                  f"{[int(c) for c in phase.gc['count']]}, pauses "
                  f"{[round(t * 1000, 1) for t in phase.gc['total_s']]} ms in all, longest "
                  f"{[round(t * 1000, 1) for t in phase.gc['max_s']]} ms")
    print(f"\nwrote {png} and its .json")
    if profile_path is not None:
        print_profile(profile_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--members", type=int, default=250)
    parser.add_argument("--rate", type=float, default=5.0, help="messages/s per room (steady)")
    parser.add_argument("--seconds", type=float, default=15.0, help="steady phase length")
    parser.add_argument("--burst", type=int, default=60, help="messages per room (burst)")
    parser.add_argument("--window", type=int, default=4, help="unacked says per room (burst)")
    parser.add_argument("--peers", default="python-socketio,node")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--pin", action="store_true",
                        help="pin the server to CPU 0 and the clients to CPU 1")
    parser.add_argument("--nice", type=int, default=0,
                        help="run servers and clients at this niceness (negative needs root)")
    parser.add_argument("--profile", action="store_true", help="cProfile the daemon")
    trio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
