"""Wall-clock time read off trio's clock, so the scheduler can be driven by a MockClock.

Slots are wall-clock instants (UTC); timers are trio deadlines. `WallClock`
maps one onto the other. In production (`origin=None`) `now()` is the system
time and a wait is cut into steps of at most `max_step_s`, so a wall clock
that jumps (NTP, suspend) is noticed within a step. In tests, `origin` pins
"now" to a fixed instant at the moment the clock is built and then advances
with `trio.current_time()`: with `autojump_clock`, 30 minutes of a slot pass
in milliseconds, and REST checks ("startTime in the future", "join before the
start") see the same time as the timers.
"""

from __future__ import annotations

import datetime as dt
import math

import trio

UTC = dt.UTC

# A wait longer than this is re-checked against the system clock.
DEFAULT_MAX_STEP_S = 60.0


class WallClock:
    def __init__(self, origin: dt.datetime | None = None, *,
                 max_step_s: float = DEFAULT_MAX_STEP_S) -> None:
        if origin is not None and origin.tzinfo is None:
            raise ValueError("origin must be timezone-aware")
        self._origin = origin
        self._t0 = trio.current_time() if origin is not None else 0.0
        self.max_step_s = max_step_s

    def __repr__(self) -> str:
        return f"<WallClock {'mock' if self._origin else 'system'} {self.now().isoformat()}>"

    def now(self) -> dt.datetime:
        if self._origin is None:
            return dt.datetime.now(UTC)
        return self._origin + dt.timedelta(seconds=trio.current_time() - self._t0)

    def deadline(self, when: dt.datetime | None) -> float:
        """The trio deadline at which `when` is reached (capped at one step in production)."""
        if when is None:
            return math.inf if self._origin is not None else trio.current_time() + self.max_step_s
        # +1 ms: waking a hair late guarantees `now() >= when` despite float rounding.
        delay = max(0.0, (when - self.now()).total_seconds()) + 0.001
        if self._origin is None:
            delay = min(delay, self.max_step_s)
        return trio.current_time() + delay
