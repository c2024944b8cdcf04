"""One failure that settles many queued calls reaches every caller (no AlreadyUsedError)."""

from __future__ import annotations

import trio

from pratico_daemon.storage.bridge import Op, RedisBridge
from pratico_daemon.storage.protocols import StorageUnavailable


async def test_closing_the_bridge_fails_every_waiting_caller_with_its_own_error(aio_loop):
    # Port 9 on loopback refuses at once: every call waits, then the close fails them all.
    bridge = RedisBridge("redis://127.0.0.1:9/0", timeout_s=30)
    errors: list[BaseException] = []

    async def caller() -> None:
        try:
            await bridge.call(Op([("PING",)], lambda replies: replies[0]))
        except Exception as exc:
            errors.append(exc)

    async with trio.open_nursery() as outer, trio.open_nursery() as workers:
        await workers.start(bridge.run)
        for _ in range(5):
            outer.start_soon(caller)
        await trio.sleep(0.2)
        workers.cancel_scope.cancel()
    assert len(errors) == 5
    assert all(isinstance(e, StorageUnavailable) for e in errors), errors
    assert len({id(e) for e in errors}) == 5
