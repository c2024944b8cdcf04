"""Shared fixtures: the whole daemon in-process on port 0, embedded by default.

Fixtures that need Redis/PostgreSQL talk to the real services on loopback
(scripts/services starts them); each test gets its own database and key prefix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from pratico_daemon.config import Config, from_mapping
from pratico_daemon.daemon import BoundAddresses, Daemon

pytest_plugins = ["tests.support.redis", "tests.support.pg"]

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


def make_config(state_dir: Path, **sections: dict[str, Any]) -> Config:
    data: dict[str, Any] = {
        "realtime": {"port": 0},
        "storage": {"state_dir": str(state_dir)},
        "auth": {"jwt_secret": TEST_SECRET},
        "daemon": {"shutdown_timeout_s": 5},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return from_mapping(data, environ={})


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def embedded_config(state_dir: Path) -> Config:
    return make_config(state_dir)


class RunningDaemon:
    def __init__(self, daemon: Daemon, addresses: BoundAddresses) -> None:
        self.daemon = daemon
        self.addresses = addresses
        self.url = addresses.http_url
        self.ws_url = f"ws://{addresses.realtime}"

    def token(self, sub: str, role: str = "teacher", org: str = "org1", ttl: int = 3600) -> str:
        return self.daemon.services.auth.mint(sub, role, org, ttl)


async def start_daemon(nursery: trio.Nursery, config: Config) -> RunningDaemon:
    daemon = Daemon(config)
    addresses = await nursery.start(daemon.run)
    return RunningDaemon(daemon, addresses)


@pytest.fixture
async def daemon(nursery: trio.Nursery, embedded_config: Config) -> AsyncIterator[RunningDaemon]:
    running = await start_daemon(nursery, embedded_config)
    yield running
    running.daemon.request_shutdown()
