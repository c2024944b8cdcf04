"""The expirations feed: expired key names into one bounded trio channel.

Both presence stores (Redis keyspace notifications, embedded TTL timer) push
the names of expired keys here; the presence task reads `receive`.

Overflow policy: the producer never blocks (a Redis subscriber that stalls
loses its connection; an in-process timer must not wait on a consumer). When
the channel is full the name is dropped and the feed remembers it lost
something; `run` then waits for space and sends `protocols.RESYNC` once (one
marker covers every drop made before it entered the channel). The
consumer, on RESYNC, rescans the keys it cares about (`PresenceStore.scan`),
which covers every name dropped before the marker. The same marker follows a
resubscription, since notifications published while the subscription was down
are gone for good (Redis pub/sub does not buffer).
"""

from __future__ import annotations

from typing import Any

import attrs
import trio

from pratico_daemon.storage.protocols import RESYNC

# A presence expiry is a teacher's grace period ending: a few per second at
# most on a busy node. 1,000 names absorb a burst (a mass disconnect expiring
# together) while the consumer ends lessons in Postgres.
DEFAULT_SIZE = 1000


@attrs.frozen
class FeedStatistics:
    delivered: int
    dropped: int
    resyncs: int


class ExpiryFeed:
    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self._send, self.receive = trio.open_memory_channel[str](size)
        self._resync_wanted = trio.Event()
        self._delivered = 0
        self._dropped = 0
        self._resyncs = 0

    def statistics(self) -> FeedStatistics:
        return FeedStatistics(self._delivered, self._dropped, self._resyncs)

    def push(self, name: str) -> None:
        """Deliver an expired key name, or drop it and schedule a RESYNC."""
        try:
            self._send.send_nowait(name)
            self._delivered += 1
        except trio.WouldBlock:
            self._dropped += 1
            # Only `run` ever blocks sending: if it waits, its RESYNC is not in the
            # channel yet and will follow this drop, so one more is not needed.
            if self._send.statistics().tasks_waiting_send == 0:
                self._resync_wanted.set()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # nobody listens any more: the daemon is stopping

    def resync(self) -> None:
        """Tell the consumer to rescan (notifications may have been lost)."""
        self._resync_wanted.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Send RESYNC whenever one is wanted, waiting for space in the channel."""
        task_status.started()
        while True:
            await self._resync_wanted.wait()
            self._resync_wanted = trio.Event()
            try:
                await self._send.send(RESYNC)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            self._resyncs += 1
