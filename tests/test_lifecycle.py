"""The daemon's lifecycle as an operator sees it, on a real subprocess:
SIGTERM drains and exits 0 in time, a second signal exits at once, SIGHUP
reopens the log file that logrotate moved away.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import trio

from tests.support import http
from tests.support.process import daemon_process, write_config

SHUTDOWN_TIMEOUT_S = 5.0


def _messages(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [orjson.loads(line)["msg"] for line in path.read_text().splitlines() if line]


async def _wait_logged(path: Path, match: Callable[[str], bool]) -> None:
    """Poll a log file (a file has no change notification worth the trouble)."""
    with trio.fail_after(10):
        while True:
            if any(match(m) for m in _messages(path)):
                return
            await trio.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_drains_and_exits_0_within_the_timeout(tmp_path: Path, signum):
    config = write_config(tmp_path / "config.toml", tmp_path / "state",
                          daemon={"shutdown_timeout_s": SHUTDOWN_TIMEOUT_S})
    async with daemon_process(config) as proc:
        scrape = await http.get(f"{proc.url}/metrics")
        assert scrape.status == 200
        assert b"pratico_draining 0.0" in scrape.body

        started = trio.current_time()
        proc.signal(signum)
        assert await proc.wait_exit(timeout_s=SHUTDOWN_TIMEOUT_S + 5) == 0
        assert trio.current_time() - started < SHUTDOWN_TIMEOUT_S
        messages = [r["msg"] for r in proc.log_records()]
        assert f"{signum.name}: draining" in messages
        assert not any("timed out" in m for m in messages)


async def test_sighup_reopens_the_log_file(tmp_path: Path):
    log_file = tmp_path / "daemon.log"
    config = write_config(tmp_path / "config.toml", tmp_path / "state",
                          log={"file": str(log_file), "format": "json"})
    async with daemon_process(config) as proc:
        # READY=1 may arrive just before the log line.
        await _wait_logged(log_file, lambda m: " ready on " in m)
        rotated = log_file.rename(tmp_path / "daemon.log.1")  # what logrotate does

        proc.signal(signal.SIGHUP)
        await _wait_logged(log_file, lambda m: m == "SIGHUP: log files reopened")
        assert (await http.get(f"{proc.url}/healthz")).status == 200  # still serving

        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit(timeout_s=10) == 0
        after = _messages(log_file)
        assert "SIGTERM: draining" in after
        before = _messages(rotated)
        assert "SIGTERM: draining" not in before
        assert "SIGHUP: log files reopened" not in before
