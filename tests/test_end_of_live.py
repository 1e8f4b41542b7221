"""A viewer's blocked playlist reload learns of the broadcast's end at once.

An LL-HLS player holds a reload for media that does not exist yet (``_HLS_msn`` past the
last segment). When the broadcast ends, nothing more will come: the origin must answer
that reload with the ended playlist (EXT-X-ENDLIST) right then, not when the wait times
out (three target durations). A real ingest node (transcoder children) with a real
ffmpeg publisher, the origin in this process, the in-process or the Redis live state
between them; the broadcast is ended by the ingest's own path (an operator's stop). The
figures are printed: ``pytest -s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from castway.live.base import LiveState
from origin.app import create_app
from origin.context import OriginContext
from tests.reliability.node import CHANNEL, publishing

pytestmark = [pytest.mark.peer, pytest.mark.slow]

ENDLIST_WITHIN_S = 0.2


async def ended_at(live: LiveState, broadcast_id: str, rendition: str) -> float:
    """perf_counter() at which the rendition's live window first says EXT-X-ENDLIST
    (polled every millisecond: the end as the live state sees it)."""
    while True:
        window = await live.get_window(broadcast_id, rendition)
        if window is not None and window.ended:
            return time.perf_counter()
        await asyncio.sleep(0.001)


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_reload_blocked_past_the_last_segment_gets_endlist_as_the_broadcast_ends(
        tmp_path: Path, request: pytest.FixtureRequest, backend: str) -> None:
    extra = {"redis_url": request.getfixturevalue("redis_url")} if backend == "redis" else {}
    async with publishing(tmp_path, seconds=60, **extra) as stage:
        broadcast_id = await stage.broadcast_with_segments(2)
        live = stage.services.live
        app = create_app(stage.services.settings, catalog=stage.services.catalog, live=live,
                         storage=stage.services.storage, registry=CollectorRegistry())
        notifier = app.state.origin.notifier
        transport = httpx.ASGITransport(app=app)
        end_seen = asyncio.create_task(ended_at(live, broadcast_id, "source"))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://o") as client:
                window = await live.get_window(broadcast_id, "source")
                assert window is not None and not window.ended
                # Two segments away: only the end can answer it.
                past_the_last = {"_HLS_msn": str(window.next_msn + 1)}

                async def reload() -> tuple[httpx.Response, float]:
                    response = await client.get(f"/hls/{CHANNEL}/source/index.m3u8",
                                                params=past_the_last)
                    return response, time.perf_counter()

                blocked = asyncio.create_task(reload())
                while notifier.waiting < 1:
                    await asyncio.sleep(0.001)
                stopped = time.perf_counter()
                assert await stage.node.manager.stop_broadcast(broadcast_id)
                response, answered = await asyncio.wait_for(blocked, 30)
                end = await asyncio.wait_for(end_seen, 5)
        finally:
            end_seen.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await end_seen
            ctx: OriginContext = app.state.origin
            await ctx.notifier.close()
        assert response.status_code == 200, response.text
        assert response.text.rstrip().endswith("#EXT-X-ENDLIST")
        took = answered - end
        print(f"\nend to ENDLIST ({backend}): {took * 1000:.1f} ms "
              f"(stop to answer {(answered - stopped) * 1000:.0f} ms)")
        assert took < ENDLIST_WITHIN_S
        assert stage.publisher.wait(timeout=10) is not None  # the stop cut it
        await stage.vod_complete(broadcast_id)
