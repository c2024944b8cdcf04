"""Redis through the batching bridge vs one trio→asyncio crossing per operation.

Usage: .venv/bin/python bench/redis_bench.py [--url redis://127.0.0.1:6379/0]
       [--ops 20000] [--concurrency 200] [--rounds 3] [--rooms 2000]

Both modes run in the same process, on the same trio-asyncio loop and Redis,
with the same number of concurrent trio tasks each doing HSET on its own key:
- "per-call crossing": `await aio_as_trio(client.hset)(...)` for every
  operation (what code that does not batch would do; the client's pool gets
  one connection per task so nothing waits for a connection);
- "batching bridge": `RedisPresence.hset(...)`, i.e. the daemon's real path:
  queued, sent as one MULTI/EXEC pipeline per batch by the asyncio-side worker.
The goal (issue 3) is a ratio ≥ 5×. Then checkpoint writes/s through the
`Checkpointer` into Redis: a drain of many dirty rooms (`flush`), and a steady
state where every room changes continuously and is written every 100 ms.
Best of `--rounds` per row. Keys live under a throwaway prefix, deleted after.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Awaitable, Callable

import trio

from pratico_daemon.metrics import Metrics
from pratico_daemon.storage.aio import aio_as_trio, open_loop
from pratico_daemon.storage.bridge import RedisBridge
from pratico_daemon.storage.checkpointer import Checkpointer
from pratico_daemon.storage.protocols import Checkpoint
from pratico_daemon.storage.redis_store import RedisCheckpoints, RedisPresence, make_client
from pratico_daemon.storage.resp import RespConnection, pack

STATE = {  # a small live-room snapshot: page, a quiz, 30 participants
    "page": 7,
    "quiz": {"id": "q1", "open": True, "questions": [{"id": i, "text": "…"} for i in range(5)]},
    "participants": [{"id": f"p{i}", "name": f"Élève {i}", "connected": True} for i in range(30)],
}


async def run_tasks(concurrency: int, per_task: int, op: Callable[[int, int], Awaitable[object]]
                    ) -> float:
    """Run `op(task, i)` per_task times in each of `concurrency` tasks; return ops/s."""
    async def worker(task: int) -> None:
        for i in range(per_task):
            await op(task, i)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for task in range(concurrency):
            nursery.start_soon(worker, task)
    return concurrency * per_task / (time.perf_counter() - start)


async def bench_ops(args: argparse.Namespace, prefix: str) -> list[tuple[str, float]]:
    per_task = max(1, args.ops // args.concurrency)
    client = make_client(args.url, max_connections=args.concurrency + 16)
    best = {"per-call crossing (aio_as_trio per HSET)": 0.0, "batching bridge (presence.hset)": 0.0}
    try:
        async with trio.open_nursery() as nursery:
            bridge = RedisBridge(args.url)
            await nursery.start(bridge.run)
            presence = RedisPresence(bridge, prefix)
            hset = aio_as_trio(client.hset)

            async def per_call(task: int, i: int) -> None:
                await hset(f"{prefix}k{task}", "f", str(i))

            async def batched(task: int, i: int) -> None:
                await presence.hset(f"k{task}", {"f": str(i)})

            await run_tasks(args.concurrency, 5, per_call)  # warm the pool's connections
            await run_tasks(args.concurrency, 5, batched)
            for _ in range(args.rounds):
                for name, op in zip(best, (per_call, batched), strict=True):
                    best[name] = max(best[name], await run_tasks(args.concurrency, per_task, op))
            stats = bridge.statistics()
            print(f"(bridge: {stats.requests} requests in {stats.batches} batches, "
                  f"{stats.requests / max(1, stats.batches):.0f} per batch)")
            nursery.cancel_scope.cancel()
    finally:
        await aio_as_trio(client.aclose)()
    return list(best.items())


async def bench_checkpoints(args: argparse.Namespace, prefix: str) -> list[tuple[str, float]]:
    drain = steady = 0.0
    async with trio.open_nursery() as nursery:
        bridge = RedisBridge(args.url)
        await nursery.start(bridge.run)
        store = RedisCheckpoints(bridge, prefix, max_bytes=10 << 20)
        metrics = Metrics()
        checkpointer = Checkpointer(store, metrics, interval_s=0.1)
        await nursery.start(checkpointer.run)
        versions = dict.fromkeys(range(args.rooms), 0)

        def snapshot(room: int) -> Callable[[], Checkpoint]:
            return lambda: Checkpoint(f"room-{room}", "pratico", versions[room], STATE)

        for _ in range(args.rounds):
            # Drain: every room dirty at once, flushed (the SIGTERM path).
            for room in versions:
                versions[room] += 1
                checkpointer.mark_dirty(f"room-{room}", snapshot(room))
            start = time.perf_counter()
            await checkpointer.flush()
            drain = max(drain, args.rooms / (time.perf_counter() - start))

        # Steady state: every room changes every ~10 ms for 3 s; the
        # checkpointer may write each at most every 100 ms.
        before = checkpointer.statistics().written
        start = time.perf_counter()
        with trio.move_on_after(3.0):
            while True:
                for room in versions:
                    versions[room] += 1
                    checkpointer.mark_dirty(f"room-{room}", snapshot(room))
                await trio.sleep(0.01)
        steady = (checkpointer.statistics().written - before) / (time.perf_counter() - start)
        lag = metrics.checkpoint_lag_seconds._value.get()
        print(f"(steady state: {args.rooms} rooms changing every 10 ms, "
              f"checkpoint lag at the end {lag * 1000:.0f} ms, "
              f"ideal {args.rooms / 0.1:.0f} writes/s)")
        for room in versions:
            checkpointer.forget(f"room-{room}")
        await checkpointer.flush()
        nursery.cancel_scope.cancel()
    return [
        (f"checkpoint drain ({args.rooms} rooms, flush)", drain),
        (f"checkpoint steady ({args.rooms} rooms, 100 ms)", steady),
    ]


def join_batch(prefix: str) -> list[tuple[object, ...]]:
    """What five classroom joins send in one batch: EXISTS, HSET, PEXPIRE each."""
    commands: list[tuple[object, ...]] = []
    for i in range(5):
        key = f"{prefix}wire{i}"
        commands += [("EXISTS", key),
                     ("HSET", key, "sid", "abc123", "client_id", f"s1_{i}", "role", "student",
                      "org_id", "org1", "lesson_id", "L1"),
                     ("PEXPIRE", key, 86_400_000)]
    return commands


async def bench_wire(url: str, prefix: str, batches: int) -> list[tuple[str, float]]:
    """CPU per command of one MULTI/EXEC batch: redis-py's pipeline vs resp.py (asyncio side).

    process_time of this process only (Redis is another): packing, parsing, the
    event loop's socket work. Best of three.
    """
    commands = join_batch(prefix)
    client = make_client(url)
    conn = await RespConnection.open(url)
    payload = pack([("MULTI",), *commands, ("EXEC",)])

    async def redis_py() -> None:
        pipe = client.pipeline(transaction=True)
        for command in commands:
            pipe.execute_command(*command)
        await pipe.execute(raise_on_error=False)
        await pipe.reset()

    async def resp() -> None:
        await conn.request(payload, len(commands) + 2)

    best = {"redis-py pipeline": float("inf"), "resp.py + hiredis (the bridge)": float("inf")}
    try:
        for _ in range(3):
            for name, run in zip(best, (redis_py, resp), strict=True):
                await run()
                start = time.process_time()
                for _ in range(batches):
                    await run()
                cpu = (time.process_time() - start) / (batches * len(commands))
                best[name] = min(best[name], cpu * 1e6)
    finally:
        conn.close()
        await client.aclose()
    return list(best.items())


async def cleanup(url: str, prefix: str) -> None:
    client = make_client(url)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def main(args: argparse.Namespace) -> None:
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    async with open_loop():
        try:
            ops = await bench_ops(args, prefix)
            checkpoints = await bench_checkpoints(args, prefix)
            wire = await aio_as_trio(bench_wire)(args.url, prefix, 2000)
        finally:
            await aio_as_trio(cleanup)(args.url, prefix)
    peer = ops[0][1]
    print(f"\nRedis HSET, {args.concurrency} concurrent trio tasks, best of {args.rounds}")
    print(f"{'mode':<48} {'ops/s':>10} {'ratio':>7}")
    for name, rate in ops:
        print(f"{name:<48} {rate:>10,.0f} {rate / peer:>6.1f}×")
    print("\nCPU per command, batches of 5 joins' writes (15 commands) in MULTI/EXEC")
    print(f"{'wire':<48} {'µs/command':>10} {'ratio':>7}")
    for name, cost in wire:
        print(f"{name:<48} {cost:>10.1f} {wire[0][1] / cost:>6.1f}×")
    print(f"\n{'checkpoints through the Checkpointer':<48} {'writes/s':>10}")
    for name, rate in checkpoints:
        print(f"{name:<48} {rate:>10,.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--ops", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rooms", type=int, default=2000)
    trio.run(main, parser.parse_args())
