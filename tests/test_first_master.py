"""A real broadcast, read the way an LL-HLS player reads it, from the first second to
the last (issue #18): the ffmpeg CLI publishes over RTMP to the embedded platform; the
master playlist is fetched from the first moment it is served, and every revision of
every media playlist is fetched with blocking reloads (one per new part, as hls.js and
AVPlayer do) and checked by :class:`castway.hls.watch.BroadcastWatch`; every segment is fetched and
its media duration compared with its EXTINF, and its size with BANDWIDTH.

Two sources: a 2 s GOP (what castway asks publishers for) and OBS's default keyframe
interval, 250 frames at 30 fps (8.3 s), which must not change the playlists' timing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from castway.hls.findings import Rule
from castway.hls.measured import check_bandwidth, peak_segment_bitrate
from castway.hls.playlist import FALLBACK_BANDWIDTH_BPS
from castway.hls.reading import parse_multivariant
from castway.settings import Settings
from launch.embedded import EmbeddedPlatform
from tests.hls_reader import Seen, publish_and_read
from tests.support import make_test_media, require_tool

pytestmark = [pytest.mark.peer, pytest.mark.slow]

CLIP_S = 14.0
LADDER = {"source/index.m3u8", "360p/index.m3u8", "160p/index.m3u8"}  # of an 854x480 source


async def _watch_broadcast(tmp_path: Path, gop: int) -> Seen:
    ffmpeg = require_tool("ffmpeg")
    clip = await asyncio.to_thread(make_test_media, tmp_path / f"gop{gop}.flv",
                                   seconds=CLIP_S, width=854, height=480, gop=gop)
    settings = Settings(data_dir=tmp_path / f"data{gop}", rtmp_port=0, http_port=0,
                        reconnect_grace_s=1)
    seen = Seen()
    async with EmbeddedPlatform(settings) as platform, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{platform.http_port}",
                              timeout=30) as client:
        url = (f"rtmp://127.0.0.1:{platform.rtmp_port}/{settings.rtmp_app}/"
               f"{platform.default_stream_key}")
        await publish_and_read(client, ffmpeg, clip, url, seen, master_within_s=30,
                               clip_s=CLIP_S)
    return seen


def _check(seen: Seen) -> None:
    # castway's master follows the measured peak by design: its BANDWIDTH may change.
    findings = [f for f in seen.findings if f.rule is not Rule.VARIANT_BANDWIDTH_CHANGED]
    assert findings == [], "\n".join(str(f) for f in findings[:20])
    first = parse_multivariant(seen.first_master)
    # The whole ladder from the first master on, at sane bandwidths, never a placeholder.
    assert {v.uri for v in first.variants} == LADDER
    for variant in first.variants:
        assert variant.bandwidth is not None
        assert 100_000 <= variant.bandwidth <= 20_000_000, variant
        assert variant.bandwidth != FALLBACK_BANDWIDTH_BPS, variant
    assert all({v.uri for v in parse_multivariant(m).variants} == LADDER
               for m in seen.masters)
    # The last master's BANDWIDTH is the peak segment bit rate of what was served.
    last = parse_multivariant(seen.masters[-1])
    for variant in last.variants:
        name = variant.uri.split("/")[0]
        served = [seen.sizes[name][msn] for msn in sorted(seen.sizes[name])]
        peak = peak_segment_bitrate(served, 2)
        assert check_bandwidth(variant, peak) == []
        assert variant.bandwidth is not None and variant.bandwidth <= 1.5 * peak, \
            (variant, peak)
    # Every rendition was read revision by revision, and every segment measured.
    assert all(seen.revisions[n] >= 10 for n in ("source", "360p", "160p")), seen.revisions
    assert all(len(seen.sizes[n]) >= 5 for n in ("source", "360p", "160p"))


@pytest.mark.parametrize("gop", [60, 250], ids=["2s-gop", "obs-250-frame-gop"])
async def test_every_revision_a_player_reads_keeps_the_invariants(tmp_path: Path,
                                                                  gop: int) -> None:
    seen = await _watch_broadcast(tmp_path, gop)
    print(f"gop={gop}: first master after {seen.first_master_after_s:.2f} s "
          f"({seen.refusals} refusals before it); revisions {seen.revisions}; "
          f"first master:\n{seen.first_master}last master:\n{seen.masters[-1]}"
          f"segments (s, bytes): { {n: sorted(v.values()) for n, v in seen.sizes.items()} }")
    _check(seen)
    targets = {p.target_duration for p in seen.watch.media.values()}
    assert targets == {2}, targets
