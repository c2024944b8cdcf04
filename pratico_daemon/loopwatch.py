"""How long the event loop and the garbage collector hold everything up.

One process serves every room, so anything that blocks the trio thread (a
synchronous call, a long loop, a full garbage collection) delays every client
at once. Operators see it here before users report it:

- `pratico_event_loop_lag_seconds`: how late a periodic wake-up runs; a line in
  the log when one is later than `warn_s`.
- `pratico_gc_pause_seconds{generation}`: each collection's duration, measured
  with `gc.callbacks`.

`tune_collector()` makes collections rarer, and `freeze_startup_objects()`
moves what start-up allocated (modules, config, compiled regexes, …) out of the
collector's scans: a full collection then walks only what the live rooms hold,
which shortens its pauses (the same reason forking servers call `gc.freeze()`).
"""

from __future__ import annotations

import gc
import sys
import time
from typing import Any

import trio

from pratico_daemon import logs
from pratico_daemon.metrics import Metrics

log = logs.get("loop")


class LoopWatch:
    def __init__(self, metrics: Metrics, interval_s: float = 0.05, warn_s: float = 0.1) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self.warn_s = warn_s
        self._gc_started = 0.0

    def __repr__(self) -> str:
        return f"<LoopWatch every {self.interval_s}s warn>{self.warn_s}s>"

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Measure the loop's lag until cancelled, and the GC's pauses meanwhile."""
        if _mock_clock():
            # Lag is meaningless under a test's mock clock, and a periodic
            # sleeper would make an autojump clock crawl through the hours.
            task_status.started()
            return
        gc.callbacks.append(self._on_gc)
        try:
            task_status.started()
            while True:
                before = time.perf_counter()
                await trio.sleep(self.interval_s)
                lag = max(0.0, time.perf_counter() - before - self.interval_s)
                self.metrics.loop_lag_seconds.observe(lag)
                if lag > self.warn_s:
                    log.warning("event loop blocked for %.0f ms", lag * 1000)
        finally:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            pause = time.perf_counter() - self._gc_started
            self.metrics.gc_pause_seconds.labels(str(info["generation"])).observe(pause)
            if pause > self.warn_s:
                log.warning("garbage collection (generation %d) took %.0f ms",
                            info["generation"], pause * 1000)


def _mock_clock() -> bool:
    """Whether this trio run is on a test's `MockClock`.

    Without importing `trio.testing`: it imports pytest when pytest is
    installed (~0.1 s and a few MB at every start); a run on a MockClock has
    imported it already.
    """
    testing = sys.modules.get("trio.testing")
    return testing is not None and isinstance(trio.lowlevel.current_clock(), testing.MockClock)


def tune_collector(young_threshold: int) -> None:
    """Collect less often (see `DaemonSection.gc_threshold`); full collections
    wait for 50 x 100 young ones, and CPython's 25%-growth rule still applies."""
    gc.set_threshold(young_threshold, 50, 100)


def freeze_startup_objects() -> None:
    """Collect once, then exempt every surviving object from later collections."""
    gc.collect()
    gc.freeze()

