"""origin.context: the render cache and the rendition-report window cache."""

from __future__ import annotations

import asyncio

from castway.live.base import RenditionWindow
from castway.live.memory import MemoryLiveState
from origin.context import RenderCache, Rendered, WindowCache
from origin.responses import etag_for


class CountingLiveState(MemoryLiveState):
    """The real in-memory live state, counting window reads."""

    def __init__(self) -> None:
        super().__init__()
        self.window_reads = 0

    async def get_window(self, broadcast_id: str, rendition: str) -> RenditionWindow | None:
        self.window_reads += 1
        await asyncio.sleep(0)  # a real backend answers later (Redis round trip)
        return await super().get_window(broadcast_id, rendition)


async def test_concurrent_report_reads_share_one_live_read() -> None:
    live = CountingLiveState()
    window = RenditionWindow(segments=(), next_msn=3)
    await live.put_window("b1", "180p", window)
    cache = WindowCache(live, ttl_s=60)
    results = await asyncio.gather(*(cache.get("b1", "180p") for _ in range(100)))
    assert all(r == window for r in results)
    assert live.window_reads == 1
    await cache.get("b1", "360p")
    assert live.window_reads == 2
    await live.close()


async def test_report_windows_expire() -> None:
    live = CountingLiveState()
    cache = WindowCache(live, ttl_s=-1.0)  # every entry is already stale
    await cache.get("b1", "180p")
    await cache.get("b1", "180p")
    assert live.window_reads == 2
    await live.close()


def test_render_cache_is_keyed_by_window_identity() -> None:
    cache = RenderCache(size=2)
    a = RenditionWindow(segments=(), next_msn=1)
    b = RenditionWindow(segments=(), next_msn=1)  # equal, but another object
    cache.put(("k",), a, Rendered.of("#EXTM3U\n"))
    hit = cache.get(("k",), a)
    assert hit is not None and hit.body == b"#EXTM3U\n" and hit.etag == etag_for(b"#EXTM3U\n")
    assert cache.get(("k",), b) is None
    cache.put(("k2",), a, Rendered.of("2"))
    cache.put(("k3",), a, Rendered.of("3"))
    assert cache.get(("k",), a) is None  # evicted: the oldest of three with size 2
