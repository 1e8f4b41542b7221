"""A rung's encoder holds few frames: each frame it holds is a frame of delay behind the
source passthrough in every live playlist, and players that start on a rung keep it as
latency (docs/transcoder.md, "Encoder delay")."""

from __future__ import annotations

import random
from dataclasses import replace
from fractions import Fraction
from typing import Any

import av

from transcoder.ladder import LadderSpec, Rung
from transcoder.pipeline import MS, PipelineConfig, _open_encoder
from transcoder.segmenter import SegmentPolicy

FPS = 30


def _delay_in_frames(ctx: Any) -> int:
    """Frames given to an encoder before its first packet comes out."""
    rng = random.Random(1)
    for i in range(120):
        frame = av.VideoFrame(640, 360, "yuv420p")
        for plane in frame.planes:  # noise: every frame is work for x264
            plane.update(rng.randbytes(plane.buffer_size))
        frame.pts = i * 1000 // FPS
        frame.time_base = MS
        if list(ctx.encode(frame)):
            return i  # frames 0..i-1 were held when frame i let the first one out
    raise AssertionError("no packet out of 120 frames")


def _rung(lookahead: int | None = None) -> Any:
    """A 360p rung's encoder as the live pipeline opens it."""
    config = PipelineConfig(ladder=LadderSpec(()), policy=SegmentPolicy.from_seconds(2.0, 0.5))
    if lookahead is not None:
        config = replace(config, x264_lookahead_frames=lookahead)
    return _open_encoder("libx264", Rung("360p", 640, 360, float(FPS), 800), config)


def _preset_defaults() -> Any:
    """The same rung with x264's preset lookahead (what castway used before)."""
    ctx: Any = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 640, 360, "yuv420p"
    ctx.time_base = MS
    ctx.framerate = Fraction(FPS)
    ctx.bit_rate = 800_000
    ctx.gop_size = 100_000
    ctx.thread_type = "AUTO"
    ctx.options = {"preset": "veryfast", "x264-params": "scenecut=0:open-gop=0"}
    ctx.open()
    return ctx


def test_the_default_lookahead_holds_fewer_frames_than_the_presets() -> None:
    default, preset = _delay_in_frames(_rung()), _delay_in_frames(_preset_defaults())
    # veryfast: rc-lookahead 10 and a sync buffer of threads + B-frames, against 5
    # and none: at least 8 frames (0.27 s at 30 fps) less on any machine.
    assert default <= preset - 8, (default, preset)


def test_each_lookahead_frame_is_a_frame_of_delay() -> None:
    assert _delay_in_frames(_rung(0)) < _delay_in_frames(_rung(5)) \
        < _delay_in_frames(_rung(10))
