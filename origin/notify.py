"""Blocking playlist reload, cheaply: one live-state subscription per broadcast per process.

LL-HLS clients park a request per rendition until the next part exists (rfc8216bis
6.2.5.2). Thousands of viewers of one broadcast must not mean thousands of subscriptions
or poll loops: a :class:`MediaNotifier` keeps one :class:`_Watch` per broadcast (one
subscription to ``media:{broadcast_id}`` and one task), reads the window once per update,
and resolves every waiter that window satisfies. The broadcast's end (ended or failed)
arrives on the same topic and answers every waiter at once, with EXT-X-ENDLIST: nothing
it waits for will come. A watch with no waiters closes itself after ``idle_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from castway.events.broadcasts import BroadcastEnd
from castway.events.media import MediaEvent, MediaUpdate, media_topic
from castway.live.base import LiveState, RenditionWindow, Subscription

logger = logging.getLogger(__name__)

DEFAULT_IDLE_S = 30.0


def window_has(window: RenditionWindow, msn: int, part: int | None) -> bool:
    """Whether ``window`` satisfies ``_HLS_msn=msn`` (and ``_HLS_part=part``).

    rfc8216bis 6.2.5.2: hold until the playlist contains segment ``msn``, or with
    ``part``, part ``part`` of segment ``msn`` or anything later. An ended window
    satisfies everything: nothing more will come.
    """
    if window.ended or window.next_msn > msn:
        return True
    if part is None or window.next_msn < msn:
        return False
    return any(p.index >= part for p in window.parts)


@dataclass(eq=False, slots=True)
class _Waiter:
    rendition: str
    msn: int
    part: int | None
    future: asyncio.Future[RenditionWindow | None]
    arrived: float = 0.0  # perf_counter() when the waking event arrived


@dataclass(eq=False)
class _Watch:
    broadcast_id: str
    subscription: Subscription[MediaEvent]
    waiters: dict[str, list[_Waiter]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    last_active: float = field(default_factory=time.monotonic)


class MediaNotifier:
    """Wakes blocked playlist reloads when their part or segment is ready.

    ``on_wake(seconds)`` is called for each woken waiter with the time from the event's
    arrival to the waiter running again (the metrics histogram).
    """

    def __init__(self, live: LiveState, *, idle_s: float = DEFAULT_IDLE_S,
                 on_wake: Callable[[float], None] | None = None) -> None:
        self._live = live
        self._idle_s = idle_s
        self._on_wake = on_wake
        self._watches: dict[str, _Watch] = {}
        self._opening: dict[str, asyncio.Future[_Watch]] = {}
        self._closed = False

    @property
    def watched(self) -> int:
        """Broadcasts with a live subscription in this process."""
        return len(self._watches)

    @property
    def waiting(self) -> int:
        return sum(len(ws) for w in self._watches.values() for ws in w.waiters.values())

    async def wait_for(self, broadcast_id: str, rendition: str, msn: int, part: int | None,
                       timeout_s: float) -> RenditionWindow | None:
        """The rendition's window once it holds ``msn``/``part``; None on timeout or if
        the rendition has no window."""
        watch = await self._watch(broadcast_id)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(rendition, msn, part, loop.create_future())
        # Registered before reading the window: an event arriving in between resolves it.
        watch.waiters.setdefault(rendition, []).append(waiter)
        try:
            window = await self._live.get_window(broadcast_id, rendition)
            if window is not None and window_has(window, msn, part):
                return window
            try:
                async with asyncio.timeout(timeout_s):
                    woken = await asyncio.shield(waiter.future)
                if woken is not None and self._on_wake is not None:
                    self._on_wake(time.perf_counter() - waiter.arrived)
                return woken
            except TimeoutError:
                # A last look: an event may have been dropped by a full subscription.
                window = await self._live.get_window(broadcast_id, rendition)
                if window is not None and window_has(window, msn, part):
                    return window
                return None
        finally:
            waiters = watch.waiters.get(rendition)
            if waiters is not None:
                with contextlib.suppress(ValueError):
                    waiters.remove(waiter)
                if not waiters:
                    del watch.waiters[rendition]
            watch.last_active = time.monotonic()
            if not waiter.future.done():
                waiter.future.cancel()

    async def _watch(self, broadcast_id: str) -> _Watch:
        if self._closed:
            raise RuntimeError("notifier is closed")
        watch = self._watches.get(broadcast_id)
        if watch is not None:
            return watch
        opening = self._opening.get(broadcast_id)
        if opening is not None:  # another request is subscribing right now
            return await asyncio.shield(opening)
        future: asyncio.Future[_Watch] = asyncio.get_running_loop().create_future()
        self._opening[broadcast_id] = future
        try:
            subscription = await self._live.subscribe(media_topic(broadcast_id))
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._opening[broadcast_id]
        watch = _Watch(broadcast_id, subscription)
        watch.task = asyncio.create_task(self._run(watch), name=f"watch:{broadcast_id}")
        self._watches[broadcast_id] = watch
        future.set_result(watch)
        return watch

    async def _run(self, watch: _Watch) -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout(self._idle_s):
                        event = await watch.subscription.get()
                except TimeoutError:
                    if not watch.waiters and \
                            time.monotonic() - watch.last_active >= self._idle_s:
                        return
                    continue
                arrived = time.perf_counter()
                if isinstance(event, MediaUpdate):
                    await self._wake(watch, event.rendition, arrived)
                elif isinstance(event, BroadcastEnd):
                    for name in list(watch.waiters):
                        await self._wake(watch, name, arrived, ended=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("broadcast watch failed",
                             extra={"broadcast_id": watch.broadcast_id})
            for waiters in watch.waiters.values():
                for waiter in waiters:
                    if not waiter.future.done():
                        waiter.future.set_result(None)  # the request answers 503
        finally:
            if self._watches.get(watch.broadcast_id) is watch:
                del self._watches[watch.broadcast_id]
            await watch.subscription.close()

    async def _wake(self, watch: _Watch, rendition: str, arrived: float, *,
                    ended: bool = False) -> None:
        """Resolve the rendition's waiters that its window satisfies; with ``ended``
        (the broadcast is over) all of them, with the window as it ends: its node may be
        gone without writing EXT-X-ENDLIST (failed)."""
        if not watch.waiters.get(rendition):
            return
        window = await self._live.get_window(watch.broadcast_id, rendition)
        if window is None:
            if ended:
                for waiter in list(watch.waiters.get(rendition, ())):
                    if not waiter.future.done():
                        waiter.future.set_result(None)  # nothing to show: 503, then 404
            return
        if ended and not window.ended:
            window = replace(window, ended=True)
        for waiter in list(watch.waiters.get(rendition, ())):
            if not waiter.future.done() and window_has(window, waiter.msn, waiter.part):
                waiter.arrived = arrived
                waiter.future.set_result(window)

    async def close(self) -> None:
        self._closed = True
        watches = list(self._watches.values())
        for watch in watches:
            if watch.task is not None:
                watch.task.cancel()
        for watch in watches:
            if watch.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await watch.task
