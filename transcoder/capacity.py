"""The transcoder's side of the cost model (castway.cost): the ladders a source could get,
each with its cost, and the node's calibration (``castway calibrate``).

The options run from the richest ladder to source passthrough, giving up the dearest
work first: a high-frame-rate top rung drops to 30 fps, then the top rung goes, and so on
down. The top rungs go first because the passthrough already serves the top quality and
the bottom rungs cost little and are what thin links need.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from castway.cost import (
    Calibration,
    Encode,
    Option,
    VideoSource,
    estimate,
)
from castway.model import SourceInfo
from castway.rungs import LOW_RUNG_MAX_FPS, nearest_rung, rung_bitrate_kbps
from transcoder.ladder import LadderSpec, resolve_ladder

logger = logging.getLogger(__name__)

#: What a source that does not say its size or rate is costed as: the dearest common
#: source, so the node never promises on a guess that turns out low.
ASSUMED_SOURCE = VideoSource(1920, 1080, 60.0)


def video_source(info: SourceInfo | None) -> VideoSource:
    """The source to cost, from what the publisher said (onMetaData, the sequence
    header); what it left out is assumed at :data:`ASSUMED_SOURCE`."""
    if info is None:
        return ASSUMED_SOURCE
    width, height = info.width, info.height
    if not width or not height or width <= 0 or height <= 0:
        width, height = ASSUMED_SOURCE.width, ASSUMED_SOURCE.height
    fps = info.fps if info.fps and 0 < info.fps <= 240 else ASSUMED_SOURCE.fps
    return VideoSource(int(width), int(height), float(fps), info.video_codec or "h264")


def encodes(spec: LadderSpec, source: VideoSource) -> list[Encode]:
    return [Encode(r.width, r.height, r.fps)
            for r in resolve_ladder(spec, source.width, source.height, source.fps)]


def ladder_cost(spec: LadderSpec, source: VideoSource, cal: Calibration, *,
                passthrough_tracks: int = 0, input_kbps: float = 0.0) -> float:
    return estimate(source, encodes(spec, source), cal, passthrough_tracks=passthrough_tracks,
                    input_kbps=input_kbps)


def ladder_options(spec: LadderSpec, source: VideoSource, cal: Calibration, *,
                   passthrough_tracks: int = 0,
                   input_kbps: float = 0.0) -> list[Option[LadderSpec]]:
    """Every ladder ``source`` could get under ``spec``, richest first, with its cost.

    Only rungs the source actually gets count (none at or above its height). A ladder
    without passthrough ends on its smallest rung rather than on nothing.
    """
    kept = {r.name for r in resolve_ladder(spec, source.width, source.height, source.fps)}
    rungs = [r for r in spec.rungs if r.name in kept]
    options: list[Option[LadderSpec]] = []

    def add(candidate: LadderSpec) -> None:
        if candidate.rungs or candidate.source:
            options.append(Option(candidate, ladder_cost(
                candidate, source, cal, passthrough_tracks=passthrough_tracks,
                input_kbps=input_kbps)))

    for first in range(len(rungs) + 1):
        if not spec.source and first == len(rungs):
            break
        tail = tuple(rungs[first:])
        add(replace(spec, rungs=tail))
        if tail and source.fps > LOW_RUNG_MAX_FPS + 1 and tail[0].max_fps > LOW_RUNG_MAX_FPS:
            capped = (replace(tail[0], max_fps=LOW_RUNG_MAX_FPS), *tail[1:])
            add(replace(spec, rungs=capped))
    return options


def nominal_kbps(height: int, fps: float) -> float:
    """What a publisher sends at this size and rate when it does not say: the platform's
    rung of the nearest height (castway.rungs)."""
    return float(rung_bitrate_kbps(nearest_rung(height), fps))


def source_kbps(info: SourceInfo | None, source: VideoSource) -> float:
    """What the publisher sends of track 0: its own word (onMetaData videodatarate),
    else the platform's rate for its size."""
    if info is not None and info.video_bitrate_kbps:
        return info.video_bitrate_kbps
    return nominal_kbps(source.height, source.fps)


def describe(spec: LadderSpec, source: VideoSource) -> str:
    """``720p60,480p30,...`` (plus ``source``): a ladder as the stats show it."""
    names = [f"{r.height}p{round(r.fps):d}"
             for r in resolve_ladder(spec, source.width, source.height, source.fps)]
    if spec.source:
        names.insert(0, "source")
    return ",".join(names)


# --- calibration -------------------------------------------------------------------
def available_cores() -> float:
    """Cores this process may run on (its CPU affinity, and a cgroup v2 quota)."""
    cores = float(len(os.sched_getaffinity(0)))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    return cores


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _frames(width: int, height: int, count: int, fps: int) -> list[Any]:
    """Generated video (libavfilter's testsrc2: moving shapes and text over a gradient,
    what the benchmarks publish too), made before any clock starts."""
    import av

    container: Any = av.open(f"testsrc2=size={width}x{height}:rate={fps}", format="lavfi")
    frames: list[Any] = []
    try:
        for frame in container.decode(video=0):
            frames.append(frame)
            if len(frames) >= count:
                break
    finally:
        container.close()
    return frames


def _encode_cpu(frames: list[Any], width: int, height: int, fps: int, kbps: int,
                preset: str, *, paced: bool = False) -> tuple[float, list[Any], bytes]:
    """CPU-seconds to encode ``frames`` as one rendition of the live pipeline would;
    ``paced``: each frame given at its live time, as a live rung gets it. x264's frame
    threads then wake and sleep once a frame, and that costs CPU a batch encode does not
    show: 0.3 ms a frame at 720p and at 360p on the 2-core machine, a quarter of the
    encode at 360p (docs/transcoder.md, "Calibration")."""
    from transcoder.ladder import Rung
    from transcoder.pipeline import MS, PipelineConfig, _open_encoder
    from transcoder.segmenter import SegmentPolicy

    config = PipelineConfig(ladder=LadderSpec(()), policy=SegmentPolicy.from_seconds(2.0, 0.5),
                            x264_preset=preset)
    ctx = _open_encoder("libx264", Rung("cal", width, height, float(fps), kbps), config)
    packets: list[Any] = []
    step = 1000 // fps
    start = _cpu()
    began = time.monotonic()
    for i, frame in enumerate(frames):
        if paced:
            delay = began + i / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        frame.pts = i * step
        frame.time_base = MS
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))
    return _cpu() - start, packets, bytes(ctx.extradata or b"")


def calibrate(*, preset: str = "veryfast", seconds: float = 3.0,
              cores: float | None = None) -> Calibration:
    """Measure this machine along the live pipeline's own path, each step timed in
    CPU-seconds of this process (all its threads): ``seconds`` of generated 1080p video
    encoded as a publisher would send it, decoded, scaled to 720p and from that to 360p
    (the cascade), both encoded with the renditions' settings (the per-frame and
    per-pixel parts of x264's cost: a two-size fit), and the source packaged as a
    passthrough (the fixed part). The renditions are encoded from decoded, scaled
    frames, not pristine ones: a publisher's compression noise is work for x264 too."""
    import av
    from av.video.reformatter import VideoReformatter

    from castway.media import Codec, MediaKind, MediaPacket
    from transcoder.nal import annexb_to_avcc, avcc_record_from_annexb
    from transcoder.pipeline import Pipeline, PipelineConfig
    from transcoder.segmenter import SegmentPolicy

    fps = 30
    count = max(30, int(seconds * fps))
    src_mpx = 1920 * 1080 / 1e6
    # A 1080p source as a publisher sends it (6 Mbit/s), decoded.
    _, packets, extradata = _encode_cpu(_frames(1920, 1080, count, fps), 1920, 1080, fps,
                                        6000, "ultrafast")
    decoder: Any = av.CodecContext.create("h264", "r")
    decoder.extradata = extradata
    decoder.thread_type = "AUTO"
    decoded: list[Any] = []
    start = _cpu()
    for packet in packets:
        decoded.extend(decoder.decode(packet))
    decoded.extend(decoder.decode(None))
    decode_mpx = (_cpu() - start) / max(len(decoded), 1) / src_mpx
    big_scaler, small_scaler = VideoReformatter(), VideoReformatter()
    start = _cpu()
    mid = [big_scaler.reformat(f, 1280, 720, "yuv420p", interpolation="BICUBIC")
           for f in decoded]
    small = [small_scaler.reformat(f, 640, 360, "yuv420p", interpolation="BICUBIC")
             for f in mid]
    out_mpx = (1280 * 720 + 640 * 360) / 1e6
    scale_mpx = (_cpu() - start) / max(len(decoded), 1) / out_mpx
    encode_points: list[tuple[float, float]] = []  # (megapixels, CPU-seconds per frame)
    for frames, width, height, kbps in ((mid, 1280, 720, 2800), (small, 640, 360, 800)):
        cpu, _, _ = _encode_cpu(frames, width, height, fps, kbps, preset, paced=True)
        encode_points.append((width * height / 1e6, cpu / len(frames)))
    (mpx_a, cost_a), (mpx_b, cost_b) = encode_points
    per_mpx = max(0.0, (cost_a - cost_b) / (mpx_a - mpx_b))
    per_frame = max(0.0, cost_b - per_mpx * mpx_b)

    # The fixed part: the live pipeline packaging that source as a passthrough.
    record = avcc_record_from_annexb(extradata)
    media: list[MediaPacket] = []
    step = 1000 // fps
    for i, packet in enumerate(packets):
        data = bytes(packet)
        media.append(MediaPacket(MediaKind.VIDEO, Codec.H264, bool(packet.is_keyframe), False,
                                 i * step, i * step,
                                 annexb_to_avcc(data, drop_parameter_sets=True)))
    pipeline = Pipeline(PipelineConfig(ladder=LadderSpec((), source=True),
                                       policy=SegmentPolicy.from_seconds(2.0, 0.5),
                                       realtime=False), lambda _out: None)
    start = _cpu()
    pipeline.push(MediaPacket(MediaKind.VIDEO, Codec.H264, False, True, 0, 0, record))
    for item in media:
        pipeline.push(item)
    pipeline.finish()
    broadcast = (_cpu() - start) / (len(media) / fps)
    return Calibration(
        cores=cores if cores is not None else available_cores(),
        encode_frame_s=round(per_frame, 6), encode_mpx_s=round(per_mpx, 6),
        decode_mpx_s=round(decode_mpx, 6), scale_mpx_s=round(scale_mpx, 6),
        broadcast_s=round(broadcast, 4), preset=preset,
        measured=f"castway calibrate, {datetime.now(UTC).isoformat(timespec='seconds')}, "
                 f"{count} frames per size, x264 {preset}")


def calibrate_to(path: Path, *, preset: str, seconds: float = 3.0,
                 cores: float | None = None) -> Calibration:
    began = time.monotonic()
    cal = calibrate(preset=preset, seconds=seconds, cores=cores)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cal.to_json() + "\n")
    logger.info("calibrated", extra={"path": str(path),
                                     "seconds": round(time.monotonic() - began, 1)})
    return cal
