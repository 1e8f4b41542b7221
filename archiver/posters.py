"""Posters: one keyframe decoded (libav skips every other frame) and encoded as JPEG."""

from __future__ import annotations

import asyncio
import io
from fractions import Fraction

import av

from archiver.context import ArchiveContext, find_broadcast
from archiver.vod import smallest_rendition
from castway import layout
from castway.storage.base import VOD_PLAYLIST

POSTER_MAX_WIDTH = 640


def decode_keyframe(init: bytes | None, segment: bytes) -> av.VideoFrame | None:
    """The first keyframe of a segment (every segment starts with one); the decoder skips
    every non-key frame, so nothing else is decoded."""
    with av.open(io.BytesIO((init or b"") + segment), "r") as src:
        if not src.streams.video:
            return None
        stream = src.streams.video[0]
        stream.codec_context.skip_frame = "NONKEY"
        for frame in src.decode(stream):
            return frame
    return None


def even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def encode_jpeg(frame: av.VideoFrame, width: int, height: int, quality: int = 4) -> bytes:
    """One JPEG (libav's mjpeg encoder; ``quality`` is its qscale, 2 best .. 31 worst)."""
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuvj420p"
    codec.time_base = Fraction(1, 25)
    codec.options = {"qmin": str(quality), "qmax": str(quality)}
    scaled = frame.reformat(width=width, height=height, format="yuvj420p")
    scaled.pts = 0
    packets = [*codec.encode(scaled), *codec.encode(None)]
    return b"".join(bytes(p) for p in packets)


def poster_size(frame: av.VideoFrame) -> tuple[int, int]:
    width = min(frame.width, POSTER_MAX_WIDTH)
    return even(width), even(frame.height * width / frame.width)


async def make_poster(ctx: ArchiveContext, broadcast_id: str) -> bool:
    """(Re)write ``poster.jpg`` from the newest segment of the broadcast's smallest
    rendition; called on a timer while live and once at the end. False if there is no
    segment yet."""
    broadcast = await find_broadcast(ctx, broadcast_id)
    if broadcast is None:
        return False
    rendition = smallest_rendition(broadcast.renditions)
    if rendition is None:
        return False
    # The live window holds the newest segments; the full log only if the window is gone.
    window = await ctx.live.get_window(broadcast_id, rendition.name)
    recent = list(window.segments) if window is not None and window.segments else \
        await ctx.live.segment_log(broadcast_id, rendition.name)
    if not recent:
        return False
    segment = max(recent, key=lambda s: s.msn)

    async def fetch(key: str) -> bytes | None:
        data = await ctx.live.get_media(key)  # still in the live window: no storage trip
        if data is None:
            data = await asyncio.to_thread(ctx.storage.get, key)
        return data

    data = await fetch(segment.key)
    init = await fetch(segment.init_key) if segment.init_key else None
    if data is None or (segment.init_key and init is None):
        return False

    def render() -> bytes | None:
        frame = decode_keyframe(init, data)
        if frame is None:
            return None
        return encode_jpeg(frame, *poster_size(frame))

    jpeg = await asyncio.to_thread(render)
    if jpeg is None:
        return False
    # Refreshed while live: cacheable briefly, never immutable.
    await asyncio.to_thread(ctx.storage.put, layout.poster_key(broadcast_id), jpeg,
                            content_type="image/jpeg", cache_control=VOD_PLAYLIST)
    return True
