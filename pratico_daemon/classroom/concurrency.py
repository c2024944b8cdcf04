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

    if not calls:
        return results
    try:
        async with trio.open_nursery() as nursery:
            # The last call runs in this task: one task fewer to spawn per call.
            for i, call in enumerate(calls[:-1]):
                nursery.start_soon(run, i, call)
            results[-1] = await calls[-1]()
    except BaseExceptionGroup as group:
        first = _first_error(group)
        if first is not None:
            raise first from None
        raise
    return results


def _first_error(group: BaseExceptionGroup) -> Exception | None:
    """The first leaf that is an error of a call (not a `Cancelled` that followed it)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first_error(exc)
            if found is not None:
                return found
        elif isinstance(exc, Exception) and not isinstance(exc, trio.Cancelled):
            return exc
    return None
