"""The analytics sink: Mixpanel `/track`-style batches of connect/reconnect/disconnect.

Off by default (`[analytics] endpoint` empty). Handlers call `track(...)`,
which never blocks and never fails: the event goes on a bounded channel, or
is dropped and counted when the channel is full — which is what happens while
the endpoint is down, because the sender is then stuck in timeouts. Analytics
must never slow a connect.

One sender task (in the classroom namespace's nursery) takes up to
`batch_size` events or whatever arrived within `flush_interval_s`, and POSTs
them as one JSON array (Mixpanel's `/track` accepts `[{"event", "properties":
{"token", "distinct_id", "time", "$insert_id", …}}]`). The POST runs in a
worker thread with `urllib` (`trio.to_thread`), bounded by a timeout and a
capacity limiter of one: analytics is a trickle, and a thread keeps us free of
an HTTP client dependency. A failed batch is counted and dropped, not retried
forever (a dead endpoint must not pin memory).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from typing import Any

import attrs
import orjson
import trio

from pratico_daemon import logs
from pratico_daemon.config import AnalyticsSection

log = logs.get("classroom.analytics")

# A POST to an analytics endpoint answers in well under a second; 5 s means
# "down", and is short enough that the queue (not memory) absorbs the outage.
POST_TIMEOUT_S = 5.0


@attrs.frozen
class AnalyticsStatistics:
    queued: int
    sent: int
    dropped: int
    failed_batches: int


class AnalyticsSink:
    def __init__(self, config: AnalyticsSection) -> None:
        self.endpoint = config.endpoint
        self.token = config.token
        self.batch_size = max(1, config.batch_size)
        self.flush_interval_s = config.flush_interval_s
        self._send, self._receive = trio.open_memory_channel[dict[str, Any]](
            max(1, config.queue_size))
        self._sent = 0
        self._dropped = 0
        self._failed = 0
        self._limiter = trio.CapacityLimiter(1)

    @property
    def enabled(self) -> bool:
        return bool(self.endpoint)

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<AnalyticsSink {self.endpoint or 'off'} queued={s.queued} dropped={s.dropped}>"

    def statistics(self) -> AnalyticsStatistics:
        queued = self._receive.statistics().current_buffer_used
        return AnalyticsStatistics(queued, self._sent, self._dropped, self._failed)

    def track(self, event: str, distinct_id: str, properties: Mapping[str, Any]) -> None:
        """Queue one event (connect/reconnect/disconnect); drops and counts when full."""
        if not self.enabled:
            return
        record = {"event": event, "properties": {
            "token": self.token, "distinct_id": distinct_id, "time": int(time.time() * 1000),
            "$insert_id": uuid.uuid4().hex, **properties}}
        try:
            self._send.send_nowait(record)
        except trio.WouldBlock:
            self._dropped += 1

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Send batches until cancelled (the namespace's lifetime)."""
        task_status.started()
        if not self.enabled:
            return
        while True:
            batch = [await self._receive.receive()]
            with trio.move_on_after(self.flush_interval_s):
                while len(batch) < self.batch_size:
                    batch.append(await self._receive.receive())
            await self._post(batch)

    async def _post(self, batch: list[dict[str, Any]]) -> None:
        body = orjson.dumps(batch)
        try:
            await trio.to_thread.run_sync(self._post_blocking, body, limiter=self._limiter,
                                          abandon_on_cancel=True)
        except (OSError, urllib.error.URLError, ValueError) as exc:
            self._failed += 1
            self._dropped += len(batch)
            log.warning("analytics batch of %d dropped: %s", len(batch), exc)
        else:
            self._sent += len(batch)

    def _post_blocking(self, body: bytes) -> None:
        request = urllib.request.Request(
            self.endpoint, data=body, method="POST",
            headers={"Content-Type": "application/json", "Accept": "text/plain"})
        with urllib.request.urlopen(request, timeout=POST_TIMEOUT_S) as response:
            response.read()

