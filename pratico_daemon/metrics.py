"""Prometheus metrics, one registry per `Daemon` (tests run several in one process).

Names follow Prometheus conventions (`_total`, `_seconds`, `_bytes`). Every
component receives the `Metrics` object; nothing registers on the global default
registry.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: F401
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _latency(
    registry: CollectorRegistry, name: str, documentation: str, labels: Sequence[str] = ()
) -> Histogram:
    """A histogram of durations, 0.5 ms to 2.5 s: the daemon's latencies share buckets."""
    return Histogram(name, documentation, labels, buckets=_LATENCY_BUCKETS, registry=registry)


class BulkHistogram(Collector):
    """A label-less histogram fed a batch of observations at once, on the trio thread.

    prometheus_client's `Histogram.observe` takes two locks and walks the
    buckets in Python for each value (~2 µs). The event writer observes every
    event of every batch, tens of thousands a second, and that cost 3–10 % of
    the durable-events throughput (bench/storage_bench.py). Here a batch costs
    one `bisect` per value into plain ints, read when /metrics is scraped on
    the same thread. Exposed exactly like a `Histogram` of the same buckets.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = sorted(buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        registry.register(self)

    def __repr__(self) -> str:
        return f"<BulkHistogram {self.name} {sum(self._counts)} observations>"

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def observe_many(self, values: Iterable[float]) -> None:
        counts, bounds, total = self._counts, self._bounds, self._sum
        for value in values:
            counts[bisect_left(bounds, value)] += 1
            total += value
        self._sum = total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation)
        cumulative, buckets = 0, []
        for bound, count in zip([*map(str, self._bounds), "+Inf"], self._counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        family.add_metric([], buckets, sum_value=self._sum)
        yield family


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.connections = Gauge(
            "pratico_connections", "Open client connections", ["framing"], registry=r
        )
        self.connections_total = Counter(
            "pratico_connections_opened_total", "Connections accepted", ["framing"], registry=r
        )
        self.rooms = Gauge("pratico_rooms", "Live rooms in this process", ["kind"], registry=r)
        self.messages_in = Counter(
            "pratico_messages_in_total", "Client messages received", ["framing"], registry=r
        )
        self.messages_out = Counter(
            "pratico_messages_out_total", "Messages delivered to clients", ["framing"], registry=r
        )
        self.bytes_in = Counter("pratico_bytes_in_total", "Bytes received", registry=r)
        self.bytes_out = Counter("pratico_bytes_out_total", "Bytes sent", registry=r)
        self.event_write_seconds = BulkHistogram(
            "pratico_event_write_seconds", "Append-to-durable latency of room events",
            _LATENCY_BUCKETS, r)
        self.event_batch_size = Histogram(
            "pratico_event_batch_size",
            "Events per group commit",
            buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 5000),
            registry=r,
        )
        self.journal_depth = Gauge(
            "pratico_journal_events", "Events waiting in the outage journal", registry=r
        )
        self.checkpoint_lag_seconds = Gauge(
            "pratico_checkpoint_lag_seconds",
            "Age of the oldest room change not yet checkpointed",
            registry=r,
        )
        self.checkpoints_total = Counter(
            "pratico_checkpoints_total", "Room snapshots written", registry=r
        )
        self.slow_consumer_disconnects = Counter(
            "pratico_slow_consumer_disconnects_total",
            "Connections closed because their outbox was full",
            registry=r,
        )
        self.errors = Counter(
            "pratico_errors_total", "Errors answered to clients, by code", ["code"], registry=r
        )
        self.store_up = Gauge(
            "pratico_store_up", "1 when a backing store answers", ["store"], registry=r
        )
        self.subscription_restarts = Counter(
            "pratico_subscription_restarts_total",
            "Redis keyspace-notification subscriptions re-established",
            registry=r,
        )
        self.loop_lag_seconds = _latency(
            r, "pratico_event_loop_lag_seconds", "How late a periodic wake-up of the event loop ran"
        )
        self.gc_pause_seconds = _latency(
            r, "pratico_gc_pause_seconds", "Duration of each garbage collection, by generation",
            ["generation"],
        )
        self.draining = Gauge("pratico_draining", "1 while shutting down", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
