"""Durable events: throughput and append-to-ack latency of the group-committed writer.

Usage: .venv/bin/python bench/storage_bench.py [--seconds 3] [--dsn postgresql://postgres@127.0.0.1:5432]
                                               [--skip-embedded] [--methods copy_direct,unnest,…]

For each backend (Postgres `room_events` through the trio-asyncio bridge; the
embedded SQLite file) and, on Postgres, each way of writing a batch (binary
COPY straight into the table — the default —, one
`INSERT … SELECT FROM unnest(arrays)`, COPY into a temp table then
insert-select, `executemany` in a transaction), it offers events at several
rates (500, 2,000, 10,000 events/s and unthrottled) and reports events/s
committed and ack latency p50/p99 (from the `append_durable` call to its
return). The peer, measured in the same run, is what the daemon would do
without a writer: one INSERT (one bridge crossing, one commit) per event,
with the same concurrency. Goals (issue 3): ≥ 50,000 events/s unthrottled;
ack p99 ≤ 10 ms at 2,000 events/s.

The stores get health and metrics as in the daemon (every ack is observed in
`pratico_event_write_seconds`). The bench creates a throwaway database
(migrated) and drops it at the end;
the embedded store writes under a temporary directory.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import types
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import trio
from machine import cpu_reference_ms

from pratico_daemon.health import Health
from pratico_daemon.metrics import Metrics
from pratico_daemon.storage import migrate
from pratico_daemon.storage.aio import open_loop
from pratico_daemon.storage.embedded_sql import open_embedded_sql
from pratico_daemon.storage.pg_events import open_pg_events
from pratico_daemon.storage.postgres import Postgres
from pratico_daemon.storage.protocols import RoomEvent

RATES: list[float | None] = [500, 2_000, 10_000, None]  # None: unthrottled
UNTHROTTLED_WORKERS = 2_000  # concurrent appenders, like as many room tasks
DATA = {"question": 3, "choice": "B", "correct": True, "response_ms": 5321,
        "participant": "Zoé Martin"}


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    values = sorted(values)
    return values[max(0, math.ceil(q / 100 * len(values)) - 1)]


Append = Callable[[RoomEvent], Awaitable[None]]


async def offered(append: Append, rate: float | None, seconds: float) -> dict[str, float]:
    """Offer events at `rate`/s (or as fast as 2,000 appenders go); measure acks."""
    latencies: list[float] = []
    rooms = [f"room-{n}" for n in range(100)]
    count = 0

    async def one(event: RoomEvent) -> None:
        t0 = time.perf_counter()
        await append(event)
        latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    deadline = start + seconds
    async with trio.open_nursery() as nursery:
        if rate is None:
            async def worker(w: int) -> None:
                # `one` inlined: the harness's own coroutine per event was ~5% of the run.
                n = 0
                clock = time.perf_counter
                while (t0 := clock()) < deadline:
                    await append(RoomEvent(rooms[(w + n) % 100], "quiz_answered", DATA))
                    latencies.append(clock() - t0)
                    n += 1

            for w in range(UNTHROTTLED_WORKERS):
                nursery.start_soon(worker, w)
        else:
            # A pacer tick every millisecond spawns the events due by then: a
            # steady offered load, independent of how fast acks come back.
            while (now := time.perf_counter()) < deadline:
                due = int((now - start) * rate)
                while count < due:
                    nursery.start_soon(one, RoomEvent(rooms[count % 100], "quiz_answered", DATA))
                    count += 1
                await trio.sleep(0.001)
    elapsed = time.perf_counter() - start
    return {"committed": len(latencies) / elapsed, "p50": pct(latencies, 50) * 1000,
            "p99": pct(latencies, 99) * 1000, "n": len(latencies)}


async def _admin(dsn_base: str, sql: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(f"{dsn_base}/postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async with open_loop() as loop:
        await loop.run_aio_coroutine(go())


async def _insert_one(conn: asyncpg.Connection, e: RoomEvent, data: str) -> None:
    await conn.execute(
        "INSERT INTO room_events (id, created_at, room_id, user_id, type, data)"
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT (id) DO NOTHING",
        e.id, e.created_at, e.room_id, e.user_id, e.type, data)


def _observed() -> Any:
    """Health and metrics as the daemon gives them: each ack is observed, as in production."""
    return types.SimpleNamespace(health=Health(), metrics=Metrics())


def row(label: str, method: str, rate: float | None, r: dict[str, float],
        batches: float | None, peer: float | None) -> str:
    offered_s = "max" if rate is None else f"{rate:,.0f}"
    ratio = f"{r['committed'] / peer:.1f}×" if peer else ""
    batch = f"{batches:.0f}" if batches else ""
    return (f"| {label:<9} | {method:<12} | {offered_s:>7} | {r['committed']:>10,.0f} "
            f"| {r['p50']:>7.2f} | {r['p99']:>7.2f} | {batch:>6} | {ratio:>6} |")


METHODS = ("copy_direct", "unnest", "copy", "executemany")


async def bench_postgres(dsn_base: str, seconds: float,
                         methods: tuple[str, ...] = METHODS) -> list[str]:
    import orjson

    lines = []
    name = f"pratico_bench_{uuid.uuid4().hex[:8]}"
    await _admin(dsn_base, f'CREATE DATABASE "{name}"')
    try:
        async with open_loop():
            pg = await Postgres.open(f"{dsn_base}/{name}", max_size=8)
            await migrate.apply(pg)

            async def naive(e: RoomEvent) -> None:
                await pg.run(_insert_one, e, orjson.dumps(dict(e.data)).decode(), timeout_s=120)

            peer = await offered(naive, None, seconds)
            lines.append(row("postgres", "peer: 1/event", None, peer, None, None))
            for method in methods:
                with tempfile.TemporaryDirectory() as tmp:
                    async with open_pg_events(pg, Path(tmp), method=method,
                                              services=_observed()) as store:
                        for rate in RATES:
                            b0, c0 = store.writer.batches, store.writer.committed
                            r = await offered(store.append_durable, rate, seconds)
                            per_batch = (store.writer.committed - c0) / max(
                                1, store.writer.batches - b0)
                            lines.append(row("postgres", method, rate, r, per_batch,
                                             peer["committed"] if rate is None else None))
            await pg.close()
    finally:
        await _admin(dsn_base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return lines


async def bench_embedded(seconds: float) -> list[str]:
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        async with open_embedded_sql(Path(tmp) / "pratico.sqlite", services=_observed()) as sql:
            store = sql.events
            for rate in RATES:
                b0, c0 = store.writer.batches, store.writer.committed
                r = await offered(store.append_durable, rate, seconds)
                per_batch = (store.writer.committed - c0) / max(1, store.writer.batches - b0)
                lines.append(row("embedded", "sqlite", rate, r, per_batch, None))
    return lines


async def main(args: Any) -> None:
    header = ("| backend   | method       | offered | committed/s |  p50 ms |  p99 ms "
              "|  batch |  ratio |")
    rule = ("|-----------|--------------|---------|-------------|---------|---------|"
            "--------|--------|")
    reference_before = cpu_reference_ms()
    lines = await bench_postgres(args.dsn, args.seconds, tuple(args.methods.split(",")))
    if not args.skip_embedded:
        lines += await bench_embedded(args.seconds)
    print(f"\nDurable events, {args.seconds:g} s per cell (ratio: unthrottled events/s over "
          f"one INSERT per event, same run); machine reference {reference_before:.0f} ms before, "
          f"{cpu_reference_ms():.0f} ms after (bench/machine.py: lower is a faster phase)\n")
    print(header)
    print(rule)
    for line in lines:
        print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432",
                        help="server URL without the database name")
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="Postgres ways of writing a batch, comma-separated")
    trio.run(main, parser.parse_args())
