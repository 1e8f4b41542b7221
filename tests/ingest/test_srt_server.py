"""SrtServer against real SRT callers (the ffmpeg CLI, srt-live-transmit): what a
publisher sends arrives as MediaPackets; refusals are SRT rejections the caller sees."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest

from castway.media import Codec, MediaKind
from castway.settings import Settings
from ingest.srt import libsrt
from ingest.srt.server import SrtServer
from tests.ingest.helpers import RecordingHandler

pytestmark = [
    pytest.mark.skipif(not libsrt.available(), reason="libsrt not installed"),
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed"),
]


def make_settings(**overrides: object) -> Settings:
    return Settings(host="127.0.0.1", srt_port=0, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def handler() -> RecordingHandler:
    return RecordingHandler(reject={"wrong"})


@pytest.fixture
async def server(handler: RecordingHandler) -> AsyncIterator[SrtServer]:
    srv = SrtServer(make_settings(idle_timeout_s=5.0), handler)
    await srv.start()
    yield srv
    await srv.stop()


def ffmpeg_publish(port: int, streamid: str, seconds: float = 4.0, *,
                   video: str = "libx264", audio: str = "aac",
                   extra: str = "") -> subprocess.Popen[bytes]:
    """ffmpeg sending a generated picture and tone as MPEG-TS over SRT, in real time."""
    url = f"srt://127.0.0.1:{port}?streamid={streamid}{extra}"
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
         "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(seconds), "-c:v", video, "-g", "25", "-pix_fmt", "yuv420p",
         *(["-preset", "ultrafast", "-tune", "zerolatency"] if video == "libx264" else
           ["-preset", "ultrafast", "-x265-params", "log-level=error"]),
         "-c:a", audio, "-b:a", "64k", "-f", "mpegts", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


async def finished(p: subprocess.Popen[bytes], timeout: float = 30) -> tuple[int, str]:
    rc = await asyncio.wait_for(asyncio.to_thread(p.wait), timeout)
    assert p.stderr is not None
    return rc, p.stderr.read().decode(errors="replace")


async def test_ffmpeg_h264_aac_arrives_as_config_then_frames(
        server: SrtServer, handler: RecordingHandler,
        procs: list[subprocess.Popen[bytes]]) -> None:
    procs.append(p := ffmpeg_publish(server.port, "#!::r=live/abc,m=publish", 3.0))
    await handler.wait_for(lambda: handler.publications)
    [rec] = handler.publications
    assert rec.request.stream_key == "abc" and rec.request.app == "live"
    assert rec.request.connection_id.startswith("srt-")
    rc, err = await finished(p)
    assert rc == 0, err
    await asyncio.wait_for(rec.closed.wait(), 15)
    video = [m for m in rec.packets if m.kind is MediaKind.VIDEO]
    audio = [m for m in rec.packets if m.kind is MediaKind.AUDIO]
    assert video[0].is_config and video[0].codec is Codec.H264 and video[0].payload[0] == 1
    assert audio[0].is_config and audio[0].codec is Codec.AAC
    assert audio[0].payload[:2] == b"\x11\x88"  # AAC-LC, 48 kHz, mono (the sine)
    frames = [m for m in video if not m.is_config]
    assert frames[0].is_keyframe and 60 <= len(frames) <= 76  # 3 s at 25 fps
    dts = [m.dts_ms for m in frames]
    assert dts == sorted(dts) and dts[0] < 200
    assert server.active_publishers == 0


async def test_bare_key_streamid_publishes(server: SrtServer, handler: RecordingHandler,
                                           procs: list[subprocess.Popen[bytes]]) -> None:
    procs.append(p := ffmpeg_publish(server.port, "abc", 1.0))
    await handler.wait_for(lambda: handler.publications)
    assert handler.publications[0].request.stream_key == "abc"
    assert (await finished(p))[0] == 0


@pytest.mark.parametrize("streamid", ["#!::r=live/wrong,m=publish", "#!::m=publish",
                                      "#!::r=live/abc,m=request", "with space"])
async def test_refused_callers_fail_to_connect(
        server: SrtServer, handler: RecordingHandler,
        procs: list[subprocess.Popen[bytes]], streamid: str) -> None:
    procs.append(p := ffmpeg_publish(server.port, streamid.replace(" ", "%20"), 1.0))
    rc, err = await finished(p)
    assert rc != 0 and "reject" in err.lower(), err
    assert not handler.publications


async def test_second_caller_on_a_live_channel_is_refused_first_goes_on(
        server: SrtServer, handler: RecordingHandler,
        procs: list[subprocess.Popen[bytes]]) -> None:
    procs.append(first := ffmpeg_publish(server.port, "abc", 4.0))
    await handler.wait_for(lambda: handler.publications
                           and len(handler.publications[0].packets) > 10)
    procs.append(second := ffmpeg_publish(server.port, "#!::r=live/abc,m=publish", 1.0))
    rc, err = await finished(second)
    assert rc != 0 and "reject" in err.lower()
    [(_, rejection)] = handler.rejections
    assert "already live" in rejection.description
    rc, err = await finished(first)
    assert rc == 0, err
    [rec] = handler.publications
    await asyncio.wait_for(rec.closed.wait(), 15)
    frames = [m for m in rec.packets if m.kind is MediaKind.VIDEO and not m.is_config]
    assert len(frames) >= 90  # the first publisher's 4 s went on uncut


async def test_disconnect_cuts_the_publisher(server: SrtServer, handler: RecordingHandler,
                                             procs: list[subprocess.Popen[bytes]]) -> None:
    procs.append(ffmpeg_publish(server.port, "abc", 30.0))
    await handler.wait_for(lambda: handler.publications
                           and len(handler.publications[0].packets) > 5)
    [rec] = handler.publications
    assert server.disconnect(rec.request.connection_id, "broadcast stopped")
    await asyncio.wait_for(rec.closed.wait(), 10)
    assert rec.close_reason == "broadcast stopped"


async def test_passphrase_lets_in_only_callers_that_know_it(
        handler: RecordingHandler, procs: list[subprocess.Popen[bytes]]) -> None:
    srv = SrtServer(make_settings(srt_passphrase="correct-horse-battery"), handler)
    await srv.start()
    try:
        procs.append(none := ffmpeg_publish(srv.port, "abc", 1.0))
        assert (await finished(none))[0] != 0
        procs.append(wrong := ffmpeg_publish(srv.port, "abc", 1.0,
                                             extra="&passphrase=wrong-horse-battery"))
        assert (await finished(wrong))[0] != 0
        assert not handler.publications  # neither claimed the channel
        procs.append(bad_key := ffmpeg_publish(srv.port, "wrong", 1.0,
                                               extra="&passphrase=correct-horse-battery"))
        await finished(bad_key)  # connected, then closed: the key is checked after
        await handler.wait_for(lambda: handler.rejections, timeout=10)
        assert [r.stream_key for r, _ in handler.rejections] == ["wrong"]
        procs.append(right := ffmpeg_publish(srv.port, "abc", 1.0,
                                             extra="&passphrase=correct-horse-battery"))
        rc, err = await finished(right)
        assert rc == 0, err
        [rec] = handler.publications
        await asyncio.wait_for(rec.closed.wait(), 10)
        assert any(m.kind is MediaKind.VIDEO and not m.is_config for m in rec.packets)
    finally:
        await srv.stop()


async def test_hevc_and_opus_arrive_with_their_configs(
        server: SrtServer, handler: RecordingHandler,
        procs: list[subprocess.Popen[bytes]]) -> None:
    procs.append(p := ffmpeg_publish(server.port, "abc", 2.0, video="libx265",
                                     audio="libopus", extra="&linger=3"))
    rc, err = await finished(p)
    assert rc == 0, err
    [rec] = handler.publications
    await asyncio.wait_for(rec.closed.wait(), 10)
    video = [m for m in rec.packets if m.kind is MediaKind.VIDEO]
    audio = [m for m in rec.packets if m.kind is MediaKind.AUDIO]
    assert video[0].is_config and video[0].codec is Codec.HEVC and video[0].payload[0] == 1
    assert audio[0].is_config and audio[0].codec is Codec.OPUS
    assert audio[0].payload.startswith(b"OpusHead")
    assert len([m for m in video if not m.is_config]) == 50  # 2 s at 25 fps


async def test_wait_for_publishers_counts_the_connected_ones(
        server: SrtServer, handler: RecordingHandler,
        procs: list[subprocess.Popen[bytes]]) -> None:
    procs.append(p := ffmpeg_publish(server.port, "abc", 2.0))
    await handler.wait_for(lambda: handler.publications and handler.publications[0].packets)
    assert await server.wait_for_publishers(0.05) == 1  # a drain waits for it
    assert (await finished(p))[0] == 0
    assert await server.wait_for_publishers(15) == 0
