"""Threads of their own for blocking storage calls.

The storage interface is synchronous (boto3 is), and a stalled S3 holds the calling
thread for as long as the client's timeouts allow (connect + read timeout, times the
attempts: about 20 s; a frozen server accepts connections and never answers). Run on
asyncio's default executor, a handful of such calls take every thread it has, and
whatever else runs there waits behind them: piping packets to a transcoder, writing
the upload spool, catalog queries. So storage work never runs there: each owner
(the uploader, the origin, the transcoder's fallback path) has a :class:`StoragePool`,
bounded, that a stalled storage can fill without stalling anything else.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

# Concurrent blocking storage calls of one owner; more wait for a thread (they are
# awaited, so the event loop never does).
DEFAULT_STORAGE_THREADS = 8


class StoragePool:
    """A bounded thread pool for blocking storage (or spool disk) calls."""

    def __init__(self, threads: int = DEFAULT_STORAGE_THREADS, *, name: str = "storage") -> None:
        if threads < 1:
            raise ValueError("a storage pool needs at least one thread")
        self.threads = threads
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` on one of this pool's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Stop taking work; calls not started are cancelled. A call stuck on a frozen
        storage is not waited for (its thread ends with the call's timeout)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
