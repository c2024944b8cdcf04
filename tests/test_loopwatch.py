"""The event-loop lag and GC pause metrics an operator reads (docs/reference/metrics.md)."""

from __future__ import annotations

import gc
import logging
import time

import pytest
import trio

from pratico_daemon.config import ConfigError, from_mapping
from pratico_daemon.loopwatch import LoopWatch
from pratico_daemon.metrics import Metrics


def _count(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(f"{name}_count", labels or None)
    return value or 0.0


def _sum(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(f"{name}_sum") or 0.0


async def test_a_blocked_loop_is_measured_and_logged(caplog: pytest.LogCaptureFixture):
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        await nursery.start(LoopWatch(metrics, interval_s=0.01, warn_s=0.05).run)
        await trio.sleep(0.05)
        with caplog.at_level(logging.WARNING, logger="pratico.loop"):
            time.sleep(0.12)  # noqa: ASYNC251 - the blocking call under test
            await trio.sleep(0.05)
        gc.collect()
        await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    assert _count(metrics, "pratico_event_loop_lag_seconds") >= 3
    assert _sum(metrics, "pratico_event_loop_lag_seconds") >= 0.1
    assert any("event loop blocked for" in r.getMessage() for r in caplog.records)
    assert _count(metrics, "pratico_gc_pause_seconds", generation="2") >= 1
    assert not any(cb.__self__.metrics is metrics for cb in gc.callbacks
                   if hasattr(cb, "__self__")), "the GC callback outlived the watch"


async def test_under_a_mock_clock_the_watch_does_nothing(autojump_clock):
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        await nursery.start(LoopWatch(metrics).run)
        await trio.sleep(3600)  # an autojump clock is not slowed by a periodic sleeper
        nursery.cancel_scope.cancel()
    assert _count(metrics, "pratico_event_loop_lag_seconds") == 0


def test_the_collector_threshold_is_configurable_and_checked():
    assert from_mapping({}, environ={}).daemon.gc_threshold == 20_000
    config = from_mapping({"daemon": {"gc_threshold": 700}}, environ={})
    assert config.daemon.gc_threshold == 700
    with pytest.raises(ConfigError) as error:
        from_mapping({"daemon": {"gc_threshold": 5}}, environ={})
    assert "gc_threshold" in str(error.value)
