"""A nursery for a store's background tasks that does not wrap its user's errors.

`open_redis` and `open_embedded_keys` yield while their worker tasks run in a
nursery. Under trio's strict exception groups an error raised by the code in
the `async with` body would come out as an `ExceptionGroup` of one, which no
caller expects from a context manager: a single error is re-raised as itself
(several stay a group). The background tasks are cancelled when the body ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


@asynccontextmanager
async def background_tasks() -> AsyncIterator[trio.Nursery]:
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
