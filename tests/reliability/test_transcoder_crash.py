"""A transcoder child killed in the middle of a real broadcast costs nothing: its
successor redoes what it had in progress, and the VOD of every rendition holds every
frame the publisher sent, with no discontinuity.

A real ingest node and archiver (tests/reliability/node.py) with a real ffmpeg publisher
streaming 10 s in real time; the child is SIGKILLed twice while segments are open."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from castway.layout import RenditionFile
from tests.reliability.node import FPS, poll, publishing
from tests.support import packet_counts

pytestmark = pytest.mark.peer

SECONDS = 10.0


async def test_a_transcoder_killed_twice_mid_broadcast_loses_no_frame(tmp_path: Path) -> None:
    async with publishing(tmp_path, seconds=SECONDS) as stage:
        pipeline = stage.node.transcoder
        assert pipeline is not None
        for segments in (3, 6):
            broadcast_id = await stage.broadcast_with_segments(segments)
            transcoder = pipeline.running[broadcast_id]
            restarts = transcoder.restarts
            pid = transcoder.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)

            async def replaced(t: Any = transcoder, before: int = restarts) -> bool:
                return bool(t.restarts > before)

            await poll("the successor", replaced, 30)
        assert await asyncio.to_thread(stage.publisher.wait, 60) == 0
        await stage.vod_complete(broadcast_id)
        assert stage.metric("castway_transcoder_replays_total") == 2
        master = stage.master(broadcast_id)
        variants = sorted(master.parent.glob(f"*/{RenditionFile.VOD_PLAYLIST}"))
        assert len(variants) >= 2, variants
        for variant in variants:
            assert "#EXT-X-DISCONTINUITY\n" not in variant.read_text(), variant
    counts = packet_counts(str(master))
    assert counts["video"] == [int(SECONDS * FPS)] * len(counts["video"]), counts
