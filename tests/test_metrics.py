"""The bulk histogram scrapes exactly like prometheus_client's own Histogram."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from pratico_daemon.metrics import _LATENCY_BUCKETS, BulkHistogram

VALUES = st.lists(st.one_of(st.sampled_from(_LATENCY_BUCKETS),  # exactly on a bound
                            st.floats(0, 10, allow_nan=False)), max_size=50)


def _lines(registry: CollectorRegistry, name: str) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines()
            if line.startswith(name) and "_created" not in line]


@given(batches=st.lists(VALUES, max_size=5))
def test_bulk_histogram_matches_a_histogram(batches: list[list[float]]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("x_seconds", "d", _LATENCY_BUCKETS, ours)
    reference = Histogram("x_seconds", "d", buckets=_LATENCY_BUCKETS, registry=theirs)
    for batch in batches:
        bulk.observe_many(batch)
        for value in batch:
            reference.observe(value)
    assert _lines(ours, "x_seconds") == _lines(theirs, "x_seconds")
