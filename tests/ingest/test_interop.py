"""Real publishers against the real IngestServer: the ffmpeg CLI, PyAV (libavformat),
GStreamer's rtmp2sink and rtmpsink (librtmp, the library family OBS uses).

Every packet of the source file must arrive, in order, with its payload unchanged and
its timestamps (dts, and pts through the composition time) offset by one constant.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

from castway.media import Codec, MediaKind
from castway.settings import Settings
from ingest.server import IngestServer
from tests.ingest.helpers import AsyncTestPublisher, RecordedPublication, RecordingHandler
from tests.support import make_test_media, require_tool

pytestmark = pytest.mark.peer
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Pkt:
    kind: str
    dts: int
    pts: int
    digest: str


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of 320x180p30 H.264 (no B-frames) + AAC in FLV."""
    return make_test_media(tmp_path_factory.mktemp("ingest") / "clip.flv", seconds=2,
                           width=320, height=180)


@pytest.fixture(scope="module")
def hevc_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of 320x180p30 HEVC with B-frames + Opus in Matroska."""
    path = tmp_path_factory.mktemp("ingest") / "hevc.mkv"
    return make_test_media(path, seconds=2, width=320, height=180, vcodec="libx265",
                           extra_args=("-preset", "ultrafast", "-x265-params",
                                       "log-level=error:bframes=2", "-c:a", "libopus"))


@pytest.fixture
async def ingest() -> AsyncIterator[tuple[IngestServer, RecordingHandler]]:
    handler = RecordingHandler(reject={"wrong-key"})
    server = IngestServer(Settings(host="127.0.0.1", rtmp_port=0, idle_timeout_s=20), handler)
    await server.start()
    yield server, handler
    await server.stop()


def source_packets(path: Path) -> list[Pkt]:
    out: list[Pkt] = []
    with av.open(str(path)) as container:
        for packet in container.demux():
            tb = packet.time_base
            if packet.dts is None or packet.pts is None or packet.size == 0 or tb is None:
                continue
            out.append(Pkt(packet.stream.type, round(packet.dts * tb * 1000),
                           round(packet.pts * tb * 1000), hashlib.sha1(bytes(packet)).hexdigest()))
    return out


def received_packets(pub: RecordedPublication) -> list[Pkt]:
    return [Pkt(p.kind.value, p.dts_ms, p.pts_ms, hashlib.sha1(p.payload).hexdigest())
            for p in pub.packets if not p.is_config]


def assert_same_packets(source: list[Pkt], got: list[Pkt]) -> None:
    for kind in (MediaKind.VIDEO.value, MediaKind.AUDIO.value):
        want = [p for p in source if p.kind == kind]
        have = [p for p in got if p.kind == kind]
        assert len(have) == len(want), f"{kind}: {len(have)} packets, sent {len(want)}"
        assert [p.digest for p in have] == [p.digest for p in want], f"{kind} payloads differ"
    offsets = {g.dts - s.dts for s, g in zip(sorted(source, key=lambda p: (p.kind, p.dts)),
                                             sorted(got, key=lambda p: (p.kind, p.dts)),
                                             strict=True)}
    assert len(offsets) == 1, f"timestamps not shifted by one constant: {offsets}"
    cts_sent = sorted((p.kind, p.pts - p.dts) for p in source)
    cts_got = sorted((p.kind, p.pts - p.dts) for p in got)
    assert cts_got == cts_sent


async def run_publisher(*cmd: str, timeout: float = 60, cwd: Path | None = None) -> int:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.PIPE, cwd=cwd)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    if proc.returncode != 0:
        print(err.decode(errors="replace")[-2000:])
    return proc.returncode


async def finished(handler: RecordingHandler, key: str) -> RecordedPublication:
    await handler.wait_for(lambda: any(p.request.stream_key == key for p in handler.publications))
    pub = next(p for p in handler.publications if p.request.stream_key == key)
    await asyncio.wait_for(pub.closed.wait(), 30)
    return pub


def ffmpeg_cmd(src: Path, url: str, *pre: str) -> list[str]:
    return [require_tool("ffmpeg"), "-nostdin", "-loglevel", "error", *pre, "-i", str(src),
            "-c", "copy", "-f", "flv", url]


async def test_ffmpeg_cli_publishes_every_packet(
        clip: Path, ingest: tuple[IngestServer, RecordingHandler]) -> None:
    server, handler = ingest
    url = f"rtmp://127.0.0.1:{server.port}/live/cli-key?token=abc"
    assert await run_publisher(*ffmpeg_cmd(clip, url)) == 0
    pub = await finished(handler, "cli-key")
    assert pub.request.query == {"token": "abc"}
    assert pub.close_reason == "unpublished"
    assert pub.metadata and pub.metadata[0]["width"] == 320.0
    configs = [p for p in pub.packets if p.is_config]
    assert {(p.kind, p.codec) for p in configs} == {(MediaKind.VIDEO, Codec.H264),
                                                    (MediaKind.AUDIO, Codec.AAC)}
    assert_same_packets(source_packets(clip), received_packets(pub))


async def pyav_publish(src: Path, url: str) -> None:
    """Publish with PyAV in a child process (see benchmarks.pyav_publish.py)."""
    rc = await run_publisher(sys.executable, "-m", "benchmarks.pyav_publish", str(src), url,
                             cwd=REPO_ROOT)
    assert rc == 0


async def test_pyav_publishes_every_packet(
        clip: Path, ingest: tuple[IngestServer, RecordingHandler]) -> None:
    server, handler = ingest
    await pyav_publish(clip, f"rtmp://127.0.0.1:{server.port}/live/pyav")
    pub = await finished(handler, "pyav")
    assert_same_packets(source_packets(clip), received_packets(pub))


async def test_hevc_and_opus_over_enhanced_rtmp_from_pyav(
        hevc_clip: Path, ingest: tuple[IngestServer, RecordingHandler]) -> None:
    """PyAV 18's libavformat muxes HEVC as E-RTMP hvc1 (CodedFrames with composition
    time: the clip has B-frames) and Opus as an E-RTMP v2 ExAudio FourCC."""
    server, handler = ingest
    await pyav_publish(hevc_clip, f"rtmp://127.0.0.1:{server.port}/live/hevc")
    pub = await finished(handler, "hevc")
    configs = {(p.kind, p.codec) for p in pub.packets if p.is_config}
    assert configs == {(MediaKind.VIDEO, Codec.HEVC), (MediaKind.AUDIO, Codec.OPUS)}
    got = received_packets(pub)
    assert any(p.pts != p.dts for p in got if p.kind == "video"), "expected B-frames"
    assert_same_packets(source_packets(hevc_clip), got)


@pytest.mark.parametrize("sink", ["rtmp2sink", "rtmpsink"])
async def test_gstreamer_publishes_every_packet(
        sink: str, clip: Path, ingest: tuple[IngestServer, RecordingHandler]) -> None:
    gst = require_tool("gst-launch-1.0")
    inspect = require_tool("gst-inspect-1.0")
    if subprocess.run([inspect, sink], capture_output=True).returncode != 0:
        require_tool(f"gstreamer-element-{sink}")  # skips locally, fails in CI
    server, handler = ingest
    url = f"rtmp://127.0.0.1:{server.port}/live/gst-{sink}"
    pipeline = (f"filesrc location={clip} ! flvdemux name=d d.video ! queue ! h264parse ! "
                f"flvmux name=m streamable=true ! {sink} location={url} "
                "d.audio ! queue ! aacparse ! m.")
    assert await run_publisher(gst, "-q", *pipeline.split()) == 0
    pub = await finished(handler, f"gst-{sink}")
    assert_same_packets(source_packets(clip), received_packets(pub))


async def test_wrong_key_is_rejected_and_the_publisher_fails(
        clip: Path, ingest: tuple[IngestServer, RecordingHandler]) -> None:
    server, handler = ingest
    url = f"rtmp://127.0.0.1:{server.port}/live/wrong-key"
    assert await run_publisher(*ffmpeg_cmd(clip, url)) != 0
    [(request, rejection)] = handler.rejections
    assert request.stream_key == "wrong-key"
    assert rejection.code == "NetStream.Publish.BadName"
    assert handler.publications == []


async def test_second_publisher_on_a_live_key_is_rejected_while_the_first_continues(
        clip: Path, ingest: tuple[IngestServer, RecordingHandler]) -> None:
    server, handler = ingest
    url = f"rtmp://127.0.0.1:{server.port}/live/busy"
    first = await asyncio.create_subprocess_exec(
        *ffmpeg_cmd(clip, url, "-re", "-stream_loop", "-1"), stderr=subprocess.DEVNULL)
    try:
        await handler.wait_for(lambda: handler.publications
                               and len(handler.publications[0].packets) > 10)
        assert await run_publisher(*ffmpeg_cmd(clip, url)) != 0
        assert [r.code for _, r in handler.rejections] == ["NetStream.Publish.BadName"]
        # A raw connection sending garbage dies alone, too.
        bad = await AsyncTestPublisher.open(server.port)
        await bad.send(b"\x03" + bytes(1536))
        await bad.send(b"\xff" * 4000)
        assert await bad.closed_by_server()
        [pub] = handler.publications
        seen = len(pub.packets)
        await handler.wait_for(lambda: len(pub.packets) > seen + 10)
        assert not pub.closed.is_set() and first.returncode is None
    finally:
        first.terminate()
        await first.wait()
    await asyncio.wait_for(handler.publications[0].closed.wait(), 30)


async def test_a_multitrack_publish_from_pyav_delivers_every_track_whole_under_its_id(
        tmp_path: Path, ingest: tuple[IngestServer, RecordingHandler]) -> None:
    """Three H.264 video tracks and AAC, published by PyAV 18's libavformat (FFmpeg 8):
    track 0 goes as plain packets, tracks 1 and 2 as E-RTMP v2 OneTrack multitrack
    packets (issue 14). Every track's packets arrive unchanged, each under its own track
    id, with its own sequence header; none is taken for another's."""
    ffmpeg = require_tool("ffmpeg")
    src = tmp_path / "three-tracks.mkv"
    sizes = ((320, 180), (256, 144), (160, 90))
    cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-y"]
    for width, height in sizes:
        cmd += ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=30:duration=2"]
    cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=2"]
    for i in range(len(sizes) + 1):
        cmd += ["-map", str(i)]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-bf", "0",
            "-pix_fmt", "yuv420p", "-c:a", "aac", str(src)]
    subprocess.run(cmd, check=True)
    server, handler = ingest
    await pyav_publish(src, f"rtmp://127.0.0.1:{server.port}/live/multitrack")
    pub = await finished(handler, "multitrack")
    with av.open(str(src)) as container:
        assert len(container.streams.video) == 3
        packets = source_packets_of(container)
        video = [s.index for s in container.streams.video]
    for track, index in enumerate(video):
        want = [pkt for i, pkt in packets if i == index or (track == 0 and i is None)]
        mine = [p for p in pub.packets if p.track == track]
        assert_same_packets(want, [Pkt(p.kind.value, p.dts_ms, p.pts_ms,
                                       hashlib.sha1(p.payload).hexdigest())
                                   for p in mine if not p.is_config])
        configs = {(p.kind, p.codec) for p in mine if p.is_config}
        assert configs == ({(MediaKind.VIDEO, Codec.H264), (MediaKind.AUDIO, Codec.AAC)}
                           if track == 0 else {(MediaKind.VIDEO, Codec.H264)}), track


def source_packets_of(container: av.container.InputContainer) -> list[tuple[int | None, Pkt]]:
    """(video stream index, or None for audio; packet) of every packet of ``container``."""
    out: list[tuple[int | None, Pkt]] = []
    for packet in container.demux():
        tb = packet.time_base
        if packet.dts is None or packet.pts is None or packet.size == 0 or tb is None:
            continue
        index = packet.stream.index if packet.stream.type == "video" else None
        out.append((index, Pkt(packet.stream.type, round(packet.dts * tb * 1000),
                               round(packet.pts * tb * 1000),
                               hashlib.sha1(bytes(packet)).hexdigest())))
    return out
