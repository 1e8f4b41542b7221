"""Stopping or killing `castway serve` during a broadcast loses no VOD.

A real `castway serve` process, a real ffmpeg publisher, a real stop: Ctrl-C (SIGINT) or
SIGKILL in the middle of the broadcast. What the live playlist showed a viewer before the
stop must be in the VOD, complete in storage, playable by ffmpeg's HLS demuxer, with every
rendition holding the same frames."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.serve_process import Served, serve
from tests.support import make_test_media, packet_counts, poll, require_tool

pytestmark = pytest.mark.peer

T = TypeVar("T")
FPS = 30




@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_media(tmp_path_factory.mktemp("media") / "long.flv", seconds=30.0)


@pytest.fixture
def publisher(long_clip: Path) -> Iterator[Callable[[Served], subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(served: Served) -> subprocess.Popen[str]:
        url = f"rtmp://127.0.0.1:{served.rtmp_port}/live/{served.stream_key()}"
        proc = subprocess.Popen([require_tool("ffmpeg"), "-nostdin", "-loglevel", "error",
                                 "-re", "-i", str(long_clip), "-c", "copy", "-f", "flv", url],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def live_segments(served: Served, rendition: str = "source") -> list[int]:
    """Media sequence numbers of a rendition's live playlist, as a viewer sees them."""
    response = httpx.get(f"{served.base}/hls/default/{rendition}/index.m3u8?ll=0",
                         timeout=5)
    if response.status_code != 200:
        return []
    return [int(n) for n in re.findall(r"/(\d+)\.m4s", response.text)]


def live_renditions(served: Served) -> list[str]:
    master = httpx.get(f"{served.base}/hls/default/master.m3u8", timeout=5).text
    return re.findall(r"^(?:/hls/default/)?([^/\s#]+)/index\.m3u8", master, re.M)


def seen_live(served: Served) -> dict[str, list[int]]:
    """Every rendition's live segments, once the ladder is up and has three segments."""
    renditions = live_renditions(served)
    if len(renditions) < 2:
        return {}
    seen = {r: live_segments(served, r) for r in renditions}
    return seen if all(len(s) >= 3 for s in seen.values()) else {}


def recorded_segments(data_dir: Path, rendition: str) -> set[int]:
    """What the durable segment log (the catalog) holds for a rendition."""
    rows = catalog_rows(data_dir, "SELECT msn FROM segment_records "
                                  f"WHERE rendition = '{rendition}'")
    return {int(r[0]) for r in rows}


def catalog_rows(data_dir: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{data_dir / 'castway.db'}?mode=ro", uri=True) as db:
        return list(db.execute(query))


def vod_segments(data_dir: Path, broadcast_id: str, rendition: str) -> list[int]:
    text = (data_dir / "storage" / "broadcasts" / broadcast_id / rendition / "vod.m3u8")
    return [int(n) for n in re.findall(r"^(\d+)\.m4s$", text.read_text(), re.M)]


def check_vod_covers(data_dir: Path, broadcast_id: str, seen: dict[str, list[int]]) -> None:
    """Every rendition's VOD holds every segment a live viewer of it saw, without a hole,
    and plays in ffmpeg's HLS demuxer with at least those segments' frames."""
    for rendition, live in seen.items():
        in_vod = vod_segments(data_dir, broadcast_id, rendition)
        assert set(live) <= set(in_vod), (rendition, live, in_vod)
        assert in_vod == list(range(in_vod[0], in_vod[-1] + 1))  # no hole
    master = data_dir / "storage" / "broadcasts" / broadcast_id / "master.m3u8"
    counts = packet_counts(str(master))
    assert len(counts["video"]) == len(seen), counts  # the whole ladder
    assert min(counts["video"]) >= min(len(s) for s in seen.values()) * 2 * FPS, counts


def test_ctrl_c_during_a_broadcast_ends_it_with_a_complete_vod(
        tmp_path: Path, publisher: Callable[[Served], subprocess.Popen[str]]) -> None:
    data_dir = tmp_path / "data"
    with serve(data_dir) as served:
        ffmpeg = publisher(served)
        seen = poll("three live segments in every rendition", lambda: seen_live(served), 60)
        served.proc.send_signal(signal.SIGINT)
        assert served.proc.wait(timeout=60) == 0
        assert ffmpeg.wait(timeout=30) != 0  # the publisher was cut, not finished
    # Before any restart: the VOD was made on the way down.
    [(broadcast_id, state)] = catalog_rows(data_dir, "SELECT id, state FROM broadcasts")
    assert state == "ended"
    assert catalog_rows(data_dir, "SELECT state FROM vods") == [("complete",)]
    assert not list((data_dir / "journal").glob("*"))  # every segment durable: nothing kept
    check_vod_covers(data_dir, broadcast_id, seen)


def test_sigkill_during_a_broadcast_fails_it_and_the_next_start_makes_its_vod(
        tmp_path: Path, publisher: Callable[[Served], subprocess.Popen[str]]) -> None:
    data_dir = tmp_path / "data"
    with serve(data_dir) as served:
        ffmpeg = publisher(served)
        seen = poll("three live segments in every rendition", lambda: seen_live(served), 60)
        # The durable record follows the media within a flush interval (0.5 s).
        poll("the segments seen live in the durable record",
             lambda: all(set(s) <= recorded_segments(data_dir, r) for r, s in seen.items()),
             10)
        served.proc.kill()
        served.proc.wait(timeout=10)
        ffmpeg.wait(timeout=30)
    [(broadcast_id, state)] = catalog_rows(data_dir, "SELECT id, state FROM broadcasts")
    assert state == "live"  # nothing could record its end
    assert catalog_rows(data_dir, "SELECT state FROM vods") == []

    with serve(data_dir) as restarted:
        def vod_state() -> str | None:
            vods = httpx.get(f"{restarted.base}/api/v1/vods",
                             headers=restarted.admin_headers(), timeout=5).json()
            return vods[0]["state"] if vods and vods[0]["state"] == "complete" else None

        poll("the VOD of the killed broadcast", vod_state, 60)
        broadcast = httpx.get(f"{restarted.base}/api/v1/broadcasts/{broadcast_id}",
                              headers=restarted.admin_headers(), timeout=5).json()
        assert broadcast["state"] == "failed"
        assert broadcast["ended_at"]
        # The VOD plays through the origin too.
        assert httpx.get(f"{restarted.base}/vod/{broadcast_id}/master.m3u8",
                         timeout=5).status_code == 200
    check_vod_covers(data_dir, broadcast_id, seen)


def ingest_video_packets(served: Served) -> int | None:
    """Video packets the server has taken from its publishers (its own count)."""
    text = httpx.get(f"{served.base}/metrics", timeout=5).text
    match = re.search(r'^castway_ingest_packets_total\{kind="video"\} (\S+)$', text, re.M)
    return int(float(match.group(1))) if match else None


def test_sigkill_loses_no_frame_the_server_had_received(tmp_path: Path) -> None:
    """The publisher pauses mid-segment (its connection open, nothing more to send):
    the server holds the last seconds only in its transcoder pipeline -- the segment in
    progress cannot close before the next keyframe -- when it is SIGKILLed. The next
    start salvages them from the source journal: the VOD of every rendition holds every
    frame the server had received, with no discontinuity."""
    clip = make_test_media(tmp_path / "clip.flv", seconds=5.5)  # keyframes at 0, 2, 4 s
    data_dir = tmp_path / "data"
    with serve(data_dir) as served:
        url = f"rtmp://127.0.0.1:{served.rtmp_port}/live/{served.stream_key()}"
        ffmpeg = subprocess.Popen([require_tool("ffmpeg"), "-loglevel", "error", "-re",
                                   "-f", "flv", "-i", "pipe:0", "-c", "copy", "-f", "flv", url],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            assert ffmpeg.stdin is not None
            ffmpeg.stdin.write(clip.read_bytes())
            ffmpeg.stdin.flush()  # and kept open: the publisher is still there

            def received_all() -> int | None:
                first = ingest_video_packets(served)
                time.sleep(1.5)
                again = ingest_video_packets(served)
                return again if first and again == first and again > 4 * FPS else None

            received = poll("the publisher to pause", received_all, 60)
            poll("two segments of every rendition in the durable record",
                 lambda: all(len(recorded_segments(data_dir, r)) >= 2
                             for r in live_renditions(served)) and live_renditions(served),
                 20)
            served.proc.kill()
            served.proc.wait(timeout=10)
        finally:
            ffmpeg.kill()
            ffmpeg.wait()
    [(broadcast_id, state)] = catalog_rows(data_dir, "SELECT id, state FROM broadcasts")
    assert state == "live"
    assert list((data_dir / "journal").glob("*.journal"))  # what a crash leaves
    with serve(data_dir) as restarted:
        def vod_complete() -> bool:
            vods = httpx.get(f"{restarted.base}/api/v1/vods",
                             headers=restarted.admin_headers(), timeout=5).json()
            return bool(vods) and vods[0]["state"] == "complete"

        poll("the VOD of the killed broadcast", vod_complete, 60)
    assert not list((data_dir / "journal").glob("*.journal*"))  # salvaged, gone
    master = data_dir / "storage" / "broadcasts" / broadcast_id / "master.m3u8"
    counts = packet_counts(str(master))
    frames = received - 1  # the sequence header is not a frame
    assert len(counts["video"]) >= 2 and counts["video"] == [frames] * len(counts["video"])
    for variant in master.parent.glob("*/vod.m3u8"):
        assert "#EXT-X-DISCONTINUITY\n" not in variant.read_text(), variant
