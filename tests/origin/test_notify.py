"""origin.notify: waiters woken by live-state events, one subscription per broadcast."""

from __future__ import annotations

import asyncio
import time

import pytest

from castway.events.media import media_topic
from castway.live.base import RenditionWindow
from castway.live.memory import MemoryLiveState
from castway.model import Part
from origin.notify import MediaNotifier, window_has
from tests.origin.feed import LiveFeeder


def _window(next_msn: int, parts: int, *, ended: bool = False) -> RenditionWindow:
    return RenditionWindow(segments=(), next_msn=next_msn, ended=ended,
                           parts=tuple(Part(next_msn, i, 0.5, True, f"k{i}")
                                       for i in range(parts)))


@pytest.mark.parametrize(("window", "msn", "part", "expected"), [
    (_window(5, 0), 4, None, True),     # segment 4 is complete
    (_window(5, 0), 5, None, False),    # segment 5 is in progress
    (_window(5, 2), 5, 1, True),        # part 5.1 exists
    (_window(5, 2), 5, 2, False),       # part 5.2 does not yet
    (_window(5, 2), 4, 7, True),        # anything of a complete segment
    (_window(5, 2), 6, 0, False),
    (_window(5, 0), 5, 0, False),
    (_window(5, 0, ended=True), 9, 3, True),  # nothing more will come
])
def test_window_has(window: RenditionWindow, msn: int, part: int | None,
                    expected: bool) -> None:
    assert window_has(window, msn, part) is expected


async def test_a_thousand_waiters_share_one_subscription_and_wake_on_one_event(
        live: MemoryLiveState, feeder: LiveFeeder) -> None:
    await feeder.push_segments(1)
    latencies: list[float] = []
    notifier = MediaNotifier(live, on_wake=latencies.append)
    try:
        waiters = [asyncio.create_task(notifier.wait_for(feeder.broadcast_id, "360p", 1, 0,
                                                         timeout_s=30))
                   for _ in range(1000)]
        while notifier.waiting < 1000:
            await asyncio.sleep(0)
        assert live.subscriber_count(media_topic(feeder.broadcast_id)) == 1
        assert not any(w.done() for w in waiters)
        await feeder.push_part()  # one event: part 1.0
        results = await asyncio.wait_for(asyncio.gather(*waiters), 10)
        assert all(r is not None and r.parts[0].index == 0 for r in results)
        assert len(latencies) == 1000
        assert notifier.waiting == 0
    finally:
        await notifier.close()


async def test_wake_up_is_prompt(live: MemoryLiveState, feeder: LiveFeeder) -> None:
    """Loose bound (shared CI machine): the benchmark measures the real figure."""
    await feeder.push_segments(1)
    notifier = MediaNotifier(live)
    try:
        waiter = asyncio.create_task(notifier.wait_for(feeder.broadcast_id, "360p", 1, 0,
                                                       timeout_s=30))
        while notifier.waiting < 1:
            await asyncio.sleep(0)
        started = time.perf_counter()
        await feeder.push_part()
        assert await asyncio.wait_for(waiter, 5) is not None
        assert time.perf_counter() - started < 0.2  # ~1 ms when the machine is idle
    finally:
        await notifier.close()


async def test_timeout_returns_none(live: MemoryLiveState, feeder: LiveFeeder) -> None:
    await feeder.push_segments(1)
    notifier = MediaNotifier(live)
    try:
        assert await notifier.wait_for(feeder.broadcast_id, "360p", 3, None, 0.05) is None
        assert notifier.waiting == 0
    finally:
        await notifier.close()


async def test_events_of_other_renditions_do_not_wake(live: MemoryLiveState,
                                                      feeder: LiveFeeder) -> None:
    await feeder.push_segments(1)
    notifier = MediaNotifier(live)
    try:
        waiter = asyncio.create_task(notifier.wait_for(feeder.broadcast_id, "180p", 0, 0,
                                                       timeout_s=30))
        while notifier.waiting < 1:
            await asyncio.sleep(0)
        await feeder.push_part()  # a 360p event
        await asyncio.sleep(0.01)
        assert not waiter.done()
        waiter.cancel()
    finally:
        await notifier.close()


async def test_idle_watch_unsubscribes(live: MemoryLiveState, feeder: LiveFeeder) -> None:
    await feeder.push_segments(1)
    notifier = MediaNotifier(live, idle_s=0.05)
    try:
        await notifier.wait_for(feeder.broadcast_id, "360p", 0, None, 1)
        assert notifier.watched == 1
        task = notifier._watches[feeder.broadcast_id].task
        assert task is not None
        await asyncio.wait_for(task, 5)
        assert notifier.watched == 0
        assert live.subscriber_count(media_topic(feeder.broadcast_id)) == 0
        # A later request opens a new watch.
        assert await notifier.wait_for(feeder.broadcast_id, "360p", 0, None, 1) is not None
    finally:
        await notifier.close()


async def test_close_ends_every_watch(live: MemoryLiveState, feeder: LiveFeeder) -> None:
    notifier = MediaNotifier(live)
    await notifier.wait_for(feeder.broadcast_id, "360p", 0, None, 0.01)
    await notifier.close()
    assert notifier.watched == 0
    assert live.subscriber_count(media_topic(feeder.broadcast_id)) == 0
    with pytest.raises(RuntimeError):
        await notifier.wait_for(feeder.broadcast_id, "360p", 0, None, 0.01)
