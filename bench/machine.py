"""How fast this machine's CPU is right now, to read a bench's figures against.

This VM's speed drifts: on 2026-12-07 the same plain loop took 0.52 s and, a
few minutes later, 0.76 s, and a CPU-bound bench moved with it (durable
events: 54k events/s in a fast phase, 38k in a slow one, same code). Benches
print this reference beside their table so a later reader can tell a slower
build from a slower machine.
"""

from __future__ import annotations

import time


def cpu_reference_ms(rounds: int = 3) -> float:
    """Best of `rounds` timings of a fixed pure-Python loop, in milliseconds."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        sum(range(30_000_000))
        best = min(best, time.perf_counter() - start)
    return best * 1000
