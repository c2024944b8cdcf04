"""Wait for the kernel's TIME_WAIT sockets of earlier runs to drain before measuring.

Every bench run closes thousands of loopback connections; each leaves a
TIME_WAIT socket for 60 s. With 15,000 of them (a few runs in a row) every
new `connect()` searches the ephemeral port range for a free port, and the
same run measured 2.7 s when the machine was fresh and 4.8 s after five
runs (bench/classroom_bench.py, 2026-12-07). So each server is measured on a
machine with the same few TIME_WAIT sockets, not on the previous run's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

_TIME_WAIT = "06"  # the `st` column of /proc/net/tcp


def time_wait_sockets() -> int:
    """TIME_WAIT sockets of this network namespace (IPv4 and IPv6); 0 where unknown."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        count += sum(1 for line in lines if line.split()[3] == _TIME_WAIT)
    return count


def settle(limit: int = 1000, give_up_s: float = 75.0) -> None:
    """Block until at most `limit` TIME_WAIT sockets remain (or `give_up_s` passed)."""
    start = time.monotonic()
    first = time_wait_sockets()
    while time_wait_sockets() > limit and time.monotonic() - start < give_up_s:
        time.sleep(1.0)
    waited = time.monotonic() - start
    if waited >= 1.0:
        print(f"  (waited {waited:.0f} s for {first} TIME_WAIT sockets to drain to "
              f"{time_wait_sockets()})", file=sys.stderr)
