"""The cost estimate is within 25 % of what the real transcoder measures (issue 13).

A node calibrates (``transcoder.capacity.calibrate``, as ``castway calibrate`` does), then
generated sources (ffmpeg's testsrc2, as the capacity benchmark publishes) go through the
real supervisor and child at the pace of a live publisher, with the auto ladder at the
calibrated preset; the broadcast's measured cost (its child's CPU time per second of
media) is compared with the estimate it was admitted on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from castway.live.memory import MemoryLiveState
from castway.media import MediaKind
from castway.model import Broadcast, SourceInfo
from castway.settings import Settings
from castway.storage.local import LocalStorage
from castway.storage.uploader import Uploader
from tests.support import make_test_media
from transcoder.capacity import calibrate
from transcoder.demux import read_packets
from transcoder.supervisor import TranscoderSupervisor

# The meter skips 4 s of start-up; the 16 s after it are measured. Both sides are CPU
# time on a 2-core machine whose other hyperthread comes and goes: with 8 s measured
# (a 12 s clip) and a 4 s calibration, the 720p30 ladder read +25 % and +32 % in two CI
# runs of six, +/-13 % in the others.
SECONDS = 20.0
CALIBRATION_S = 6.0


@pytest.fixture
def calibration_file(tmp_path: Path) -> Path:
    # calibrated just before each broadcast, as a node calibrates where it runs: the
    # CPU time both measure drifts with what the machine's other hyperthread is doing
    # (a module-wide calibration taken minutes earlier estimated 0.466 cores for a 720p30
    # ladder its broadcast then measured at 0.614, where both usually read 0.56)
    path = tmp_path / "calibration.json"
    path.write_text(calibrate(preset="veryfast", seconds=CALIBRATION_S).to_json())
    return path


@pytest.fixture
async def supervisor(tmp_path: Path, calibration_file: Path) -> AsyncIterator[
        tuple[TranscoderSupervisor, MemoryLiveState]]:
    settings = Settings(data_dir=tmp_path / "data", calibration_file=calibration_file,
                        x264_preset="veryfast")
    live = MemoryLiveState()
    storage = LocalStorage(tmp_path / "storage")
    uploader = Uploader(storage, tmp_path / "spool", CollectorRegistry())
    sup = TranscoderSupervisor(settings, live, storage, CollectorRegistry(), uploader=uploader)
    yield sup, live
    await sup.close()
    await uploader.close()
    await live.close()


@pytest.mark.solo  # the calibration and the broadcast each measure the CPU: alone
@pytest.mark.parametrize(("width", "height", "fps"), [(1280, 720, 30), (1920, 1080, 30)])
async def test_the_estimate_is_within_25_percent_of_the_measured_cost(
        supervisor: tuple[TranscoderSupervisor, MemoryLiveState], media_dir: Path,
        width: int, height: int, fps: int) -> None:
    sup, live = supervisor
    clip = make_test_media(media_dir / f"cost_{height}p{fps}.flv", seconds=SECONDS,
                           width=width, height=height, fps=fps)
    # What the publisher says of its rate (onMetaData videodatarate; OBS and a
    # rate-controlled ffmpeg say it): the ingest process's share of the cost follows
    # what it sends, and this clip (x264 ultrafast, no rate set) sends far more than the
    # platform's rate for its size that an undeclared source is assumed at.
    video = [p for p in read_packets(clip) if p.kind == MediaKind.VIDEO and not p.is_config]
    kbps = sum(len(p.payload) for p in video) * 8 / (video[-1].dts_ms - video[0].dts_ms)
    broadcast = Broadcast(id=f"b{height}", channel="ch", node_id="n1",
                          source=SourceInfo(video_codec="h264", width=width, height=height,
                                            fps=float(fps), video_bitrate_kbps=kbps))
    await live.put_broadcast(broadcast)
    media = await sup.start(broadcast)
    began = time.monotonic()
    for packet in read_packets(clip):  # at a live publisher's pace
        delay = began + packet.dts_ms / 1000.0 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await media.feed(packet)
    deadline = time.monotonic() + 10.0
    while media.cost_measured is None and time.monotonic() < deadline:
        await asyncio.sleep(0.2)  # the child's next stats carry the last measurement
    estimate, measured = media.cost_estimate, media.cost_measured
    await media.finish()
    assert not media.ladder_reduced  # the node was empty: the full ladder
    assert estimate is not None and measured is not None
    error = (measured - estimate) / estimate
    print(f"{height}p{fps} at {kbps:.0f} kbit/s: estimated {estimate:.3f} cores, "
          f"measured {measured:.3f}")
    assert abs(error) <= 0.25, f"estimated {estimate:.3f} cores, measured {measured:.3f}"
