"""Cancellation that a library dropped, raised again.

On Python 3.11 ``asyncio.wait_for`` returns the result of an awaitable that finished in
the loop turn its task was cancelled, and the cancellation is lost (cpython gh-86296,
fixed in 3.12 by rebuilding ``wait_for`` on ``asyncio.timeout``). redis-py sends every
command through ``wait_for`` (always in 8.x; with a socket timeout in 7.x), so a task
cancelled during a Redis call ran on as if never cancelled: a watcher loop or a
scheduler tick that was stopped never ended, and whatever awaited it (a shutdown, a
test) hung. Measured: about 1 cancel in 10 of a task looping on GET
(tests/reliability/test_redis_cancellation.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["cancellation_kept"]


@contextlib.asynccontextmanager
async def cancellation_kept() -> AsyncIterator[None]:
    """Around a call into a library that may drop a cancellation: raise it on the way out.

    The task's ``cancelling()`` count still records the request. When it grew inside the
    block and nothing was raised, the call completed (for Redis: its reply was read, the
    connection is clean) and the cancellation is raised here instead. A block entered
    while the task is already being cancelled (cleanup in a ``finally``) is measured
    from there, so the cleanup runs.
    """
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    yield
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError("cancelled during a call that completed")
