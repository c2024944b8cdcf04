"""kill -9 while events are being appended: every acknowledged event is durable.

A child process appends events from 200 concurrent tasks and prints each id
the moment `append_durable` returns; the test SIGKILLs it mid-stream, then
finds every printed id in Postgres (or in the SQLite file) — after, for the
outage variant, a fresh store replays the journal the dead one left.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
import trio

from pratico_daemon.storage.aio import aio_as_trio
from pratico_daemon.storage.pg_events import open_pg_events
from pratico_daemon.storage.postgres import Postgres
from tests.support.tcp_proxy import TcpProxy

CHILD = r"""
import sys, trio
from pathlib import Path
from pratico_daemon.storage.protocols import RoomEvent

kind, where, state_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])

async def appenders(store):
    async def one(w):
        n = 0
        while True:
            event = RoomEvent(f"room-{w % 7}", "quiz_answered", {"w": w, "n": n})
            await store.append_durable(event)
            sys.stdout.write(f"{event.id}\n")
            sys.stdout.flush()
            n += 1
    async with trio.open_nursery() as nursery:
        for w in range(200):
            nursery.start_soon(one, w)

async def main():
    if kind == "embedded":
        from pratico_daemon.storage.embedded_sql import open_embedded_sql
        async with open_embedded_sql(Path(where)) as sql:
            await appenders(sql.events)
    else:
        from pratico_daemon.storage.aio import open_loop
        from pratico_daemon.storage.pg_events import open_pg_events
        from pratico_daemon.storage.postgres import Postgres
        async with open_loop():
            pg = await Postgres.open(where, max_size=2)
            async with open_pg_events(pg, state_dir, retry_initial_s=0.05) as store:
                await appenders(store)

trio.run(main)
"""


async def run_and_kill(kind: str, where: str, state_dir: Path, acks: int,
                       proxy: TcpProxy | None = None) -> set[uuid.UUID]:
    """Start the child, SIGKILL it after `acks` acknowledgements; return the acked ids."""
    acked: set[uuid.UUID] = set()
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", CHILD, kind, where, str(state_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    buffer = b""
    try:
        with trio.fail_after(60):
            while len(acked) < acks:
                chunk = await proc.stdout.receive_some(65536)
                assert chunk, "child exited early"
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                acked.update(uuid.UUID(line.decode()) for line in lines)
                if proxy is not None and len(acked) >= acks // 3 and not proxy.refusing:
                    proxy.cut()  # the rest is acknowledged from the journal
        proc.send_signal(signal.SIGKILL)
        rest = await proc.stdout.receive_some(1 << 20)
        while rest:  # lines already written before the kill were acked too
            buffer += rest
            rest = await proc.stdout.receive_some(1 << 20)
        acked.update(uuid.UUID(line.decode()) for line in buffer.split(b"\n") if line)
    finally:
        proc.kill()
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return acked


async def pg_ids(dsn: str) -> set[uuid.UUID]:
    async def go() -> set[uuid.UUID]:
        conn = await asyncpg.connect(dsn)
        try:
            return {r[0] for r in await conn.fetch("SELECT id FROM room_events")}
        finally:
            await conn.close()

    return await aio_as_trio(go)()


@pytest.mark.slow
async def test_postgres_acked_events_survive_sigkill(
    aio_loop: object, pg_dsn: str, tmp_path: Path
) -> None:
    acked = await run_and_kill("postgres", pg_dsn, tmp_path, 3000)
    stored = await pg_ids(pg_dsn)
    assert len(acked) >= 3000
    assert acked <= stored


@pytest.mark.slow
async def test_embedded_acked_events_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "pratico.sqlite"
    acked = await run_and_kill("embedded", str(path), tmp_path, 3000)

    def stored() -> set[uuid.UUID]:
        with sqlite3.connect(path) as conn:
            return {uuid.UUID(r[0]) for r in conn.execute("SELECT id FROM room_events")}

    assert acked <= await trio.to_thread.run_sync(stored)


@pytest.mark.slow
async def test_journaled_events_survive_sigkill_and_replay(
    aio_loop: object, pg_dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    port = await nursery.start(proxy.run)
    through = f"postgresql://postgres@127.0.0.1:{port}{urlsplit(pg_dsn).path}"
    acked = await run_and_kill("postgres", through, tmp_path, 3000, proxy=proxy)
    assert not acked <= await pg_ids(pg_dsn)  # some were only in the journal
    proxy.restore()
    pg = await Postgres.open(pg_dsn)
    async with open_pg_events(pg, tmp_path) as store:  # the next start replays
        assert store.journal.depth > 0
        with trio.fail_after(20):
            await store.wait_direct()
    await pg.close()
    assert acked <= await pg_ids(pg_dsn)
