"""An event-listening service run inside a Celery worker: its own event loop on a thread,
started when the worker is ready and stopped when it shuts down.

The archiver and the webhooks each listen for broadcast events in their workers; the
thread, the retry while Redis is not up yet and the signal wiring are the same for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from castway.live.base import LiveState, LiveStateError
from castway.settings import Settings

logger = logging.getLogger(__name__)

LISTEN_RETRY_S = 2.0
READY_WAIT_S = 10.0
STOP_WAIT_S = 10.0


class ListeningService(Protocol):
    """What runs on the listener's loop: subscribed when ``start`` returns."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


ServiceFactory = Callable[[LiveState], ListeningService]


class ListenerThread:
    """A :class:`ListeningService` on its own event loop in a daemon thread, with a live
    state client of its own. ``start`` retries until it subscribes (Redis may come up after
    the worker) and never gives up; ``ready`` is set once subscribed or stopping."""

    def __init__(self, settings: Settings, make_service: ServiceFactory, *, name: str,
                 retry_s: float = LISTEN_RETRY_S) -> None:
        self.settings = settings
        self.make_service = make_service
        self.retry_s = retry_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping: asyncio.Event | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), name=name,
                                       daemon=True)

    async def _main(self) -> None:
        from castway.live import open_live_state

        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        live = open_live_state(self.settings)
        service = self.make_service(live)
        try:
            while not self.stopping.is_set():
                try:
                    await service.start()
                    break
                except LiveStateError as e:
                    await service.stop()  # a topic subscribed already: not twice
                    logger.warning("listener cannot subscribe yet; retrying", extra={
                        "listener": self.thread.name, "error": str(e)})
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.retry_s):
                            await self.stopping.wait()
            self.ready.set()
            await self.stopping.wait()
        finally:
            self.ready.set()
            await service.stop()
            await live.close()

    def start(self, wait_s: float = READY_WAIT_S) -> None:
        self.thread.start()
        self.ready.wait(timeout=wait_s)

    def stop(self) -> None:
        if self.loop is not None and self.stopping is not None:
            self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(timeout=STOP_WAIT_S)


def listen_in_worker(app: Any, listener: ListenerThread, *, listening_to: str) -> None:
    """Run ``listener`` in every worker of ``app``: started on ``worker_ready`` (of this
    app only: a process may hold several), stopped on ``worker_shutdown``."""
    from celery.signals import worker_ready, worker_shutdown

    def on_ready(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", app) is not app:
            return
        listener.start()
        logger.info("listening for %s", listening_to, extra={"listener": listener.thread.name})

    def on_shutdown(sender: Any = None, **_: Any) -> None:
        if listener.thread.is_alive():
            listener.stop()

    worker_ready.connect(on_ready, weak=False)
    worker_shutdown.connect(on_shutdown, weak=False)
