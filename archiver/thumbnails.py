"""Thumbnails of a VOD: a sprite of keyframes and a WebVTT track that points into it."""

from __future__ import annotations

import asyncio
import logging
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av

from archiver.context import ArchiveContext, ArchiverError
from archiver.posters import decode_keyframe, encode_jpeg, even, poster_size
from archiver.stored_vod import MediaRef, read_rendition, require_object
from archiver.vod import smallest_rendition
from castway import layout
from castway.storage.base import VOD_PLAYLIST

logger = logging.getLogger(__name__)

THUMB_WIDTH = 160
SPRITE_COLUMNS = 10
MIN_THUMB_INTERVAL_S = 10.0
MAX_THUMBS = 900  # keeps a 24 h sprite under JPEG's 65535-pixel height limit


@dataclass(frozen=True, slots=True)
class ThumbPlan:
    interval_s: float
    picks: tuple[tuple[float, MediaRef], ...]  # (tile start time, segment to decode)


def plan_thumbnails(refs: Sequence[MediaRef], *, min_interval_s: float = MIN_THUMB_INTERVAL_S,
                    max_thumbs: int = MAX_THUMBS) -> ThumbPlan:
    """One tile per ``interval_s`` (at least ``min_interval_s``, at most ``max_thumbs``
    tiles), each the keyframe that starts the segment holding the tile's start time."""
    total = sum(r.duration_s for r in refs)
    if not refs or total <= 0:
        return ThumbPlan(min_interval_s, ())
    interval = max(min_interval_s, total / max_thumbs)
    picks: list[tuple[float, MediaRef]] = []
    start = 0.0
    index = 0
    t = 0.0
    while t < total and len(picks) < max_thumbs:
        while index < len(refs) - 1 and start + refs[index].duration_s <= t:
            start += refs[index].duration_s
            index += 1
        picks.append((t, refs[index]))
        t += interval
    return ThumbPlan(interval, tuple(picks))


def _vtt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def render_sprite_vtt(sprite_uri: str, count: int, interval_s: float, total_s: float,
                      tile_w: int, tile_h: int, columns: int = SPRITE_COLUMNS) -> str:
    """A WebVTT thumbnail track: cue i spans tile i's time and points at its rectangle
    in the sprite with a media fragment (``#xywh=``, W3C Media Fragments 4.2.2)."""
    lines = ["WEBVTT", ""]
    for i in range(count):
        start = i * interval_s
        end = min(total_s, start + interval_s)
        x, y = (i % columns) * tile_w, (i // columns) * tile_h
        lines += [f"{_vtt_time(start)} --> {_vtt_time(end)}",
                  f"{sprite_uri}#xywh={x},{y},{tile_w},{tile_h}", ""]
    return "\n".join(lines)


def build_sprite(frames: Sequence[av.VideoFrame], tile_w: int, tile_h: int,
                 columns: int = SPRITE_COLUMNS) -> bytes:
    """Tile the frames row by row into one JPEG with libav's ``tile`` filter."""
    rows = (len(frames) + columns - 1) // columns
    cols = min(columns, len(frames))
    graph = av.filter.Graph()
    src = graph.add_buffer(width=tile_w, height=tile_h,
                           format=av.VideoFormat("yuvj420p"),
                           time_base=Fraction(1, 25))
    tile = graph.add("tile", f"{cols}x{rows}")
    sink = graph.add("buffersink")
    src.link_to(tile)
    tile.link_to(sink)
    graph.configure()
    for i, frame in enumerate(frames):
        scaled = frame.reformat(width=tile_w, height=tile_h, format="yuvj420p")
        scaled.pts = i
        scaled.time_base = Fraction(1, 25)
        graph.push(scaled)
    graph.push(None)
    sprite = graph.pull()
    if not isinstance(sprite, av.VideoFrame):
        raise ArchiverError("the tile filter produced no video frame")
    return encode_jpeg(sprite, sprite.width, sprite.height, quality=5)


async def make_thumbnails(ctx: ArchiveContext, broadcast_id: str, *,
                          min_interval_s: float = MIN_THUMB_INTERVAL_S) -> int:
    """Write the VOD's poster, ``thumbs.jpg`` sprite and ``thumbs.vtt`` track from the
    keyframes of its smallest rendition. Returns the number of tiles."""
    name, refs = await read_rendition(ctx, broadcast_id, smallest_rendition)
    plan = plan_thumbnails(refs, min_interval_s=min_interval_s)
    if not plan.picks:
        return 0
    total = sum(r.duration_s for r in refs)

    def run() -> tuple[bytes, bytes, int, int, int] | None:
        inits: dict[str, bytes] = {}
        frames: list[av.VideoFrame] = []
        decoded: dict[str, av.VideoFrame | None] = {}
        for _, ref in plan.picks:
            if ref.key not in decoded:
                init = None
                if ref.init_key is not None:
                    if ref.init_key not in inits:
                        inits[ref.init_key] = require_object(ctx.storage, ref.init_key)
                    init = inits[ref.init_key]
                decoded[ref.key] = decode_keyframe(init, require_object(ctx.storage, ref.key))
            frame = decoded[ref.key]
            if frame is None:
                return None
            frames.append(frame)
        first = frames[0]
        tile_w = THUMB_WIDTH
        tile_h = even(first.height * tile_w / first.width)
        sprite = build_sprite(frames, tile_w, tile_h)
        poster = encode_jpeg(first, *poster_size(first))
        return sprite, poster, len(frames), tile_w, tile_h

    result = await asyncio.to_thread(run)
    if result is None:
        return 0
    sprite, poster, count, tile_w, tile_h = result
    vtt = render_sprite_vtt(posixpath.basename(layout.sprite_key(broadcast_id)), count,
                            plan.interval_s, total, tile_w, tile_h)
    await asyncio.to_thread(ctx.storage.put, layout.sprite_key(broadcast_id), sprite,
                            content_type="image/jpeg", cache_control=VOD_PLAYLIST)
    await asyncio.to_thread(ctx.storage.put, layout.sprite_vtt_key(broadcast_id),
                            vtt.encode(), content_type="text/vtt", cache_control=VOD_PLAYLIST)
    await asyncio.to_thread(ctx.storage.put, layout.poster_key(broadcast_id), poster,
                            content_type="image/jpeg", cache_control=VOD_PLAYLIST)
    logger.info("thumbnails written", extra={"broadcast_id": broadcast_id, "tiles": count,
                                             "rendition": name})
    return count
