"""What every castway process shares: start-up (logging, descriptor limit), stop signals,
and running its main coroutine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from castway.allocator import AllocatorPolicy, apply_allocator_policy
from castway.logs import configure_logging
from castway.net import raise_fd_limit
from castway.settings import Settings

logger = logging.getLogger(__name__)



class StopSignals:
    """Counts SIGINT/SIGTERM: ``first`` is set on the first, ``second`` on another."""

    def __init__(self) -> None:
        self.first = asyncio.Event()
        self.second = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.first.is_set():
            logger.warning("second stop signal: stopping now", extra={"signal": sig.name})
            self.second.set()
        else:
            logger.info("stop signal", extra={"signal": sig.name})
            self.first.set()

    def __enter__(self) -> StopSignals:
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._loop.add_signal_handler(sig, self._on_signal, sig)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._loop.remove_signal_handler(sig)


@contextlib.contextmanager
def on_sighup(callback: Callable[[], object]) -> Iterator[None]:
    """Call ``callback`` on each SIGHUP while inside (the conventional "reload your
    certificates" signal, as nginx and haproxy use it)."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, callback)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


async def wait_for_stop_signal() -> None:
    """Returns on the first SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def first_completed(*aws: Coroutine[Any, Any, Any]) -> None:
    """Wait until the first of ``aws`` finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def run_async(main: Coroutine[Any, Any, None]) -> int:
    """Run a process's main coroutine; Ctrl-C ends it quietly."""
    try:
        asyncio.run(main)
    except KeyboardInterrupt:
        pass
    return 0


def start_process(settings: Settings) -> None:
    """What every castway process does first: logging, the allocator's policy (before
    threads make arenas), and the descriptor limit raised so the connection budget (a
    share of it) is as large as the system allows."""
    configure_logging(settings.log_level, settings.log_json)
    apply_allocator_policy(AllocatorPolicy(
        arena_max=settings.malloc_arena_max,
        mmap_threshold_bytes=settings.malloc_mmap_threshold_kib * 1024,
        trim_interval_s=settings.malloc_trim_s))
    fds = raise_fd_limit()
    logger.debug("file-descriptor limit", extra={"nofile": fds})
