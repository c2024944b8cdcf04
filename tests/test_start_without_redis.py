"""The daemon starts while Redis does not answer, and says so in /readyz (DESIGN.md)."""

from __future__ import annotations

import trio

from tests.conftest import make_config, start_daemon
from tests.support import http


async def test_daemon_starts_with_redis_down(nursery, tmp_path):
    # Port 9 (discard) on loopback: nothing listens, connections are refused at once.
    config = make_config(tmp_path / "state", redis={"url": "redis://127.0.0.1:9/0"})
    with trio.fail_after(20):
        running = await start_daemon(nursery, config)
    ready = await http.get(f"{running.url}/readyz")
    assert ready.status == 503
    checks = ready.json()["checks"]
    assert checks["redis"]["ok"] is False
    assert (await http.get(f"{running.url}/healthz")).status == 200
    running.daemon.request_shutdown()
