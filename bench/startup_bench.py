"""Startup time and idle memory of the daemon (embedded mode), against a bare
`python -c "import trio"` measured in the same run.

    .venv/bin/python bench/startup_bench.py [--runs 5]

Columns: time from spawn to READY=1 on a notify socket (what systemd waits
for), to the first `/readyz` 200, and the resident memory after one idle
second. The reference process's time is spawn to exit, its memory its RSS once trio
is imported (read from /proc/self/status). Ratios are daemon / reference, medians over runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

SECRET = "bench-secret-that-is-long-enough-for-hs256-0123456789"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def reference_run() -> tuple[float, int]:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", "import trio; print(open('/proc/self/status').read())"],
        check=True, capture_output=True, text=True,
    ).stdout
    elapsed = time.perf_counter() - started
    rss = next(int(line.split()[1]) for line in out.splitlines() if line.startswith("VmRSS:"))
    return elapsed, rss


def daemon_run(tmp: Path) -> tuple[float, float, int]:
    config = tmp / "config.toml"
    config.write_text(
        f'[realtime]\nport = 0\n[storage]\nstate_dir = "{tmp / "state"}"\n'
        f'[auth]\njwt_secret = "{SECRET}"\n[log]\nlevel = "warning"\n'
    )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"pratico-bench-{os.getpid()}-{time.monotonic_ns()}"
    sock.bind("\0" + name)
    sock.settimeout(60)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRATICO_")}
    env["NOTIFY_SOCKET"] = "@" + name
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pratico_daemon", "serve", "--config",
                             str(config)], env=env)
    try:
        while True:
            datagram = sock.recv(4096).decode()
            fields = dict(line.partition("=")[::2] for line in datagram.splitlines())
            if fields.get("READY") == "1":
                break
        to_ready = time.perf_counter() - started
        address = fields.get("STATUS", "").rpartition(" ")[2]
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline:
            try:
                with urllib.request.urlopen(f"http://{address}/readyz", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.005)
        else:
            raise RuntimeError(f"/readyz on {address!r} never answered 200")
        to_readyz = time.perf_counter() - started
        time.sleep(1.0)
        rss = rss_kib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        sock.close()
    return to_ready, to_readyz, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    ref_times, ref_rss, ready, readyz, rss = [], [], [], [], []
    for _ in range(args.runs):
        elapsed, peak = reference_run()
        ref_times.append(elapsed)
        ref_rss.append(peak)
        with tempfile.TemporaryDirectory() as tmp:
            a, b, c = daemon_run(Path(tmp))
        ready.append(a)
        readyz.append(b)
        rss.append(c)
    med = statistics.median
    ref_t, ref_m = med(ref_times), med(ref_rss)
    rows = [
        ("python -c 'import trio' (reference)", ref_t, None, ref_m),
        ("pratico-daemon serve, embedded: READY=1", med(ready), ref_t, None),
        ("pratico-daemon serve, embedded: /readyz 200", med(readyz), ref_t, None),
        ("pratico-daemon idle RSS after 1 s", None, None, med(rss)),
    ]
    print(f"{args.runs} runs, medians; Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    print(f"{'what':<46} {'time ms':>9} {'× ref':>7} {'RSS MiB':>9} {'× ref':>7}")
    for what, seconds, _, kib in rows:
        t = f"{seconds * 1000:9.0f}" if seconds is not None else f"{'':>9}"
        tr = f"{seconds / ref_t:7.1f}" if seconds is not None and kib is None else f"{'':>7}"
        m = f"{kib / 1024:9.1f}" if kib is not None else f"{'':>9}"
        mr = f"{kib / ref_m:7.1f}" if kib is not None and seconds is None else f"{'':>7}"
        print(f"{what:<46} {t} {tr} {m} {mr}")


if __name__ == "__main__":
    main()
