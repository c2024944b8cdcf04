"""Capped exponential backoff for loops that retry a store until it answers."""

from __future__ import annotations

import trio


class Backoff:
    """`await backoff.wait()` sleeps the current delay, then doubles it up to `cap_s`.

    `reset()` after a success starts again from `initial_s`. `delay` is the
    sleep the next `wait()` will take (for the log line that announces it).
    """

    def __init__(self, initial_s: float, cap_s: float) -> None:
        self.initial_s = initial_s
        self.cap_s = cap_s
        self.delay = initial_s

    def reset(self) -> None:
        self.delay = self.initial_s

    async def wait(self) -> None:
        await trio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.cap_s)
