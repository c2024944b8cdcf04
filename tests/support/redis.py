"""Redis fixtures: the real Redis on loopback, one key prefix per test, and a TCP proxy.

Each test gets a unique `redis.key_prefix` (`t:<hex>:`); its keys are deleted
afterwards, so tests running side by side (or other engineers' suites on the
same Redis) never see each other's keys. The test's asyncio clients live in
`aio_loop` (function-scoped: a client cannot outlive its loop).

`TcpProxy` sits between a store and Redis so a test can freeze traffic (a
silently dead connection), cut every connection, or refuse new ones (Redis
down) without touching the shared Redis server.

Register with `pytest_plugins = ["tests.support.redis"]` in conftest.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
import trio

from pratico_daemon.auth import Authenticator
from pratico_daemon.config import Config
from pratico_daemon.services import Services
from pratico_daemon.storage.aio import open_loop
from pratico_daemon.storage.redis_store import RedisStores, open_redis

REDIS_URL = os.environ.get("PRATICO_TEST_REDIS", "redis://127.0.0.1:6379/0")


class RawRedis:
    """A synchronous client for assertions, run in a worker thread (no asyncio loop)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client = sync_redis.Redis.from_url(url)
        self.prefix = prefix

    async def __call__(self, *command: Any) -> Any:
        return await trio.to_thread.run_sync(lambda: self.client.execute_command(*command))

    def cleanup(self) -> None:
        pattern = self.prefix.replace("[", "\\[").replace("]", "\\]") + "*"
        keys = list(self.client.scan_iter(match=pattern, count=1000))
        if keys:
            self.client.delete(*keys)
        self.client.close()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"t:{uuid.uuid4().hex[:12]}:"
    yield prefix
    RawRedis(REDIS_URL, prefix).cleanup()


@pytest.fixture
def raw_redis(redis_prefix: str) -> Any:
    raw = RawRedis(REDIS_URL, redis_prefix)
    yield raw
    raw.cleanup()


@pytest.fixture
async def aio_loop() -> AsyncIterator[object]:
    async with open_loop() as loop:
        yield loop


def redis_config(state_dir: Path, prefix: str, url: str = REDIS_URL, **sections: Any) -> Config:
    from tests.conftest import make_config

    redis_section = {"url": url, "key_prefix": prefix, **sections.pop("redis", {})}
    return make_config(state_dir, redis=redis_section, **sections)


def make_services(config: Config) -> Services:
    return Services(config=config, auth=Authenticator.from_config(config), node_id="test")


@pytest.fixture
def services(state_dir: Path, redis_prefix: str, raw_redis: RawRedis) -> Services:
    """Services for a Redis-backed test (depends on raw_redis so keys get cleaned)."""
    return make_services(redis_config(state_dir, redis_prefix))


@pytest.fixture
async def redis_stores(aio_loop: object, services: Services) -> AsyncIterator[RedisStores]:
    async with open_redis(services.config, services, health_interval_s=0.5) as stores:
        with trio.fail_after(10):
            await stores.subscription.wait_subscribed()
        yield stores


class TcpProxy:
    """A loopback TCP proxy a test can freeze, cut and make refuse connections."""

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 6379) -> None:
        self._target = (target_host, target_port)
        self.port = 0
        self.refusing = False
        self._running = trio.Event()
        self._running.set()
        self._scopes: set[trio.CancelScope] = set()
        self.connections = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def freeze(self) -> None:
        """Stop forwarding bytes (connections stay open: a silently dead network)."""
        self._running = trio.Event()

    def thaw(self) -> None:
        self._running.set()

    def cut(self) -> None:
        """Close every proxied connection at once."""
        for scope in list(self._scopes):
            scope.cancel()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            if self.refusing:
                return
            self.connections += 1
            with trio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    upstream = await trio.open_tcp_stream(*self._target)
                    async with upstream, trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, client, upstream, nursery.cancel_scope)
                        nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope)
                except (trio.BrokenResourceError, OSError):
                    pass
                finally:
                    self._scopes.discard(scope)

    async def _pump(
        self, src: trio.SocketStream, dst: trio.SocketStream, done: trio.CancelScope
    ) -> None:
        try:
            while chunk := await src.receive_some(65536):
                await self._running.wait()
                await dst.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()


@pytest.fixture
async def redis_proxy(nursery: trio.Nursery) -> TcpProxy:
    proxy = TcpProxy()
    await nursery.start(proxy.run)
    return proxy


async def wait_for(predicate: Callable[[], bool], limit_s: float = 10.0) -> None:
    """Poll a condition on real time: for states that change in another process (Redis)."""
    with trio.fail_after(limit_s):
        while not predicate():  # noqa: ASYNC110 - nothing in-process to wait on
            await trio.sleep(0.01)
