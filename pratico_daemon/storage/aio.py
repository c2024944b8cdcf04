"""The trio-asyncio loop that hosts the asyncio clients (redis, asyncpg, aiortc).

`open_loop()` is trio_asyncio's, plus the executor fix of STACK-NOTES.md: under
the default `TrioExecutor` a cancelled `run_in_executor` keeps running (2 of 20
cancels delivered; aiortc's close then hangs). Ours runs the function in a trio
worker thread and then honours a pending cancellation, so a cancelled caller
really stops waiting. Every asyncio client is created and closed inside one
such loop; none outlives it (a client reused in another loop fails with
"Event loop is closed").
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio_asyncio


class CancellableExecutor(trio_asyncio.TrioExecutor):
    """TrioExecutor whose jobs deliver cancellation (STACK-NOTES.md, "Lost cancellation")."""

    def __init__(self, max_workers: int = 8) -> None:
        super().__init__(limiter=trio.CapacityLimiter(max_workers))

    async def submit(self, func: Callable[..., Any], *args: Any) -> Any:  # type: ignore[override]
        result = await trio.to_thread.run_sync(func, *args, limiter=self._limiter)
        await trio.lowlevel.checkpoint_if_cancelled()
        return result


@asynccontextmanager
async def open_loop(max_workers: int = 8) -> AsyncIterator[trio_asyncio.TrioEventLoop]:
    """A trio-asyncio loop with the cancellable default executor installed."""
    async with trio_asyncio.open_loop() as loop:
        loop.set_default_executor(CancellableExecutor(max_workers))
        yield loop


aio_as_trio = trio_asyncio.aio_as_trio
"""Call an asyncio coroutine function from trio (one crossing, ~100 µs: batch!)."""
