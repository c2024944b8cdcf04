"""Run a handler's independent store calls at once, so they share one batch.

The Redis bridge sends whatever is queued as one pipeline: three writes issued
together cost one round trip, issued one after the other three. Errors come
back as the first one raised (a handler answers with one code), not as an
ExceptionGroup.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio


async def together(*calls: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Await every call concurrently; results in order; the first error is re-raised."""
    results: list[Any] = [None] * len(calls)

    async def run(i: int, call: Callable[[], Awaitable[Any]]) -> None:
        results[i] = await call()

    try:
        async with trio.open_nursery() as nursery:
            for i, call in enumerate(calls):
                nursery.start_soon(run, i, call)
    except BaseExceptionGroup as group:
        first = _first_leaf(group)
        if isinstance(first, Exception) and not isinstance(first, trio.Cancelled):
            raise first from None
        raise
    return results


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
