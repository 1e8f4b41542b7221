"""A transcoder child killed in the middle of a real broadcast costs nothing: its
successor redoes what it had in progress, and the VOD of every rendition holds every
frame the publisher sent, with no discontinuity.

A real ingest node and archiver (tests/reliability/node.py) with a real ffmpeg publisher
streaming 10 s in real time; the child is SIGKILLed twice while segments are open. The
same with an encoder-sent ladder and two audio tracks (FFmpeg 8's multitrack muxer): the
successor keeps every track's rendition and every audio rendition whole."""

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


async def test_a_transcoder_killed_mid_multitrack_broadcast_loses_no_frame_of_any_track(
        tmp_path: Path) -> None:
    async with publishing(tmp_path, seconds=SECONDS, multitrack=True) as stage:
        pipeline = stage.node.transcoder
        assert pipeline is not None
        broadcast_id = await stage.broadcast_with_segments(4)
        transcoder = pipeline.running[broadcast_id]
        pid = transcoder.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

        async def replaced() -> bool:
            return bool(transcoder.restarts > 0)
        await poll("the successor", replaced, 30)
        assert await asyncio.to_thread(stage.publisher.wait, 60) == 0
        await stage.vod_complete(broadcast_id)
        master = stage.master(broadcast_id)
        renditions = {p.parent.name: p for p in
                      master.parent.glob(f"*/{RenditionFile.VOD_PLAYLIST}")}
        # The passthrough, the encoder's 90p, and both audio tracks' renditions.
        assert set(renditions) == {"source", "90p", "audio-t0", "audio-t1"}, renditions
        for name, playlist in renditions.items():
            assert "#EXT-X-DISCONTINUITY\n" not in playlist.read_text(), name
    counts = {name: packet_counts(str(playlist)) for name, playlist in renditions.items()}
    for name in ("source", "90p"):
        assert counts[name] == {"video": [int(SECONDS * FPS)]}, counts
    # Each audio rendition: every frame from the first boundary on (10 s of 48 kHz AAC,
    # less what came before the first keyframe), the same count for both tracks.
    audio = [counts[name]["audio"][0] for name in ("audio-t0", "audio-t1")]
    frames = SECONDS * 48_000 / 1024
    assert audio[0] == audio[1] and frames - 3 <= audio[0] <= frames + 1, counts
