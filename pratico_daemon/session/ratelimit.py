"""A token bucket per connection: `rate_per_s` sustained, `burst` at once.

Sans-clock: the caller passes `now` (trio.current_time()), so tests drive it
with a MockClock and nothing here sleeps. An event that finds the bucket empty
is answered `rate_limited` (with `retry_after` seconds) and not processed; the
connection stays open — a runaway client is slowed, not punished.
"""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend `cost` tokens if available; False means "rate limited"."""
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._stamp = now
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def retry_after(self, cost: float = 1.0) -> float:
        """Seconds until `cost` tokens are available again."""
        missing = cost - self._tokens
        return max(0.0, missing / self.rate) if self.rate > 0 else float("inf")
