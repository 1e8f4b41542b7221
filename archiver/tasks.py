"""The archiver's task functions: the same code runs in-process (embedded default) and in
a Celery worker (distributed mode, ``archiver/celery_app.py``).

Every task is idempotent, so a retry, a redelivery after a worker died (``acks_late``) or
a duplicate "ended" event does no harm: playlists are rewritten with the same text, a
verification re-checks, an export overwrites one object, expiry skips what is gone.
Transient faults (storage, live state, catalog unavailable) propagate as exceptions for
the caller's retry policy; :class:`NotReady` means "not yet, try again later".

- :func:`make_vod`: the instant VOD (playlists over the stored segments; no media copied).
- :func:`verify_vod`: marks a VOD complete once every object it references is in storage.
- :func:`export_mp4`: remux (no re-encode) the source rendition into one fast-start MP4.
- :func:`make_poster`, :func:`make_thumbnails`: a poster, a sprite + WebVTT track, decoded
  from keyframes only.
- :func:`expire_vods`: delete VODs past the retention setting.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import posixpath
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from archiver.vod import normalize_log, plan_vod, smallest_rendition, source_rendition
from castway import layout
from castway.catalog.base import Catalog
from castway.live.base import LiveState
from castway.model import (
    Broadcast,
    BroadcastState,
    Rendition,
    Segment,
    Visibility,
    Vod,
    VodState,
)
from castway.settings import Settings
from castway.storage.base import IMMUTABLE, VOD_PLAYLIST, Storage, StorageError

logger = logging.getLogger(__name__)

PLAYLIST_CONTENT_TYPE = "application/vnd.apple.mpegurl"
THUMB_WIDTH = 160
SPRITE_COLUMNS = 10
MIN_THUMB_INTERVAL_S = 10.0
MAX_THUMBS = 900  # keeps a 24 h sprite under JPEG's 65535-pixel height limit
POSTER_MAX_WIDTH = 640
PROGRESS_EVERY_S = 0.5
EXPIRE_BATCH = 100_000


class ArchiverError(Exception):
    """Base of the archiver's errors."""


class NotReady(ArchiverError):
    """Not possible yet (the broadcast is unknown, segments are still on their way):
    retry later."""


class VodIncomplete(NotReady):
    def __init__(self, vod_id: str, missing: Sequence[str]) -> None:
        super().__init__(f"VOD {vod_id}: {len(missing)} object(s) not in storage yet, "
                         f"e.g. {', '.join(missing[:3])}")
        self.vod_id = vod_id
        self.missing = tuple(missing)


class VodNotFound(ArchiverError):
    """No such VOD (or it was deleted): nothing to do, retrying will not help."""


@dataclass(frozen=True, slots=True)
class ArchiveContext:
    """What the tasks work with, passed in (embedded) or opened per worker (Celery)."""

    settings: Settings
    catalog: Catalog
    live: LiveState
    storage: Storage


@dataclass(frozen=True, slots=True)
class Verification:
    vod_id: str
    complete: bool
    checked: int
    missing: tuple[str, ...] = ()


def _mono() -> float:
    return time.monotonic()


# -- shared helpers -------------------------------------------------------------------------

async def _broadcast(ctx: ArchiveContext, broadcast_id: str) -> Broadcast | None:
    found = await asyncio.to_thread(ctx.catalog.get_broadcast, broadcast_id)
    live = await ctx.live.get_broadcast(broadcast_id)
    if found is None:
        return live
    if not found.renditions and live is not None and live.renditions:
        return replace(found, renditions=live.renditions)  # catalog row not updated yet
    return found


@dataclass(slots=True)
class FollowedLogs:
    """Segment logs of a live broadcast read as they grew, and its ladder as last seen."""

    logs: dict[str, list[Segment]] = field(default_factory=dict)
    renditions: tuple[Rendition, ...] = ()

    @property
    def segments(self) -> int:
        return sum(len(log) for log in self.logs.values())


async def _logs(ctx: ArchiveContext, broadcast_id: str, renditions: Sequence[Rendition],
                known: FollowedLogs | None = None) -> dict[str, list[Segment]]:
    """The renditions' segment logs; with ``known`` (logs read earlier, while live), only
    their tails are read, and ``known`` is brought up to date."""
    logs = known.logs if known is not None else {}
    tails = await asyncio.gather(*(
        ctx.live.segment_log(broadcast_id, r.name, start=len(logs.get(r.name, ())))
        for r in renditions))
    for r, tail in zip(renditions, tails, strict=True):
        logs.setdefault(r.name, []).extend(tail)
    return {r.name: logs[r.name] for r in renditions}


async def _durable_logs(ctx: ArchiveContext, broadcast_id: str,
                        renditions: Sequence[Rendition],
                        known: FollowedLogs | None = None) -> dict[str, list[Segment]]:
    """The renditions' segment logs: the catalog's durable record (which survives the
    process that ran the broadcast, and Redis) merged with the live state's log (which
    may hold the last few segments the catalog writer has not flushed yet)."""
    live = await _logs(ctx, broadcast_id, renditions, known)
    recorded = await asyncio.to_thread(ctx.catalog.segment_records, broadcast_id)
    # normalize_log keeps one segment per media sequence number.
    return {name: normalize_log([*recorded.get(name, ()), *log])
            for name, log in live.items()}


async def follow_logs(ctx: ArchiveContext, broadcast_id: str, known: FollowedLogs) -> int:
    """Read the new tail of every rendition's segment log of a live broadcast into
    ``known`` (so that ``make_vod`` at the end reads only the last few segments, however
    long the broadcast). Returns how many segments ``known`` holds."""
    broadcast = await ctx.live.get_broadcast(broadcast_id)
    if broadcast is None:
        return known.segments
    if broadcast.renditions:
        known.renditions = broadcast.renditions
    await _logs(ctx, broadcast_id, known.renditions, known)
    return known.segments


async def _put_playlist(ctx: ArchiveContext, key: str, text: str) -> None:
    await asyncio.to_thread(ctx.storage.put, key, text.encode(),
                            content_type=PLAYLIST_CONTENT_TYPE, cache_control=VOD_PLAYLIST)


# -- instant VOD ----------------------------------------------------------------------------

async def make_vod(ctx: ArchiveContext, broadcast_id: str, *,
                   known: FollowedLogs | None = None) -> Vod | None:
    """Write the VOD playlists of a broadcast over its stored segments and record the VOD
    (state pending until :func:`verify_vod`). None when the broadcast has nothing to
    archive. Cost grows with the number of segments only through rendering text: no
    media is read, copied or listed. ``known``: segment logs followed while live
    (:func:`follow_logs`); only their tails are read."""
    started = _mono()
    broadcast = await _broadcast(ctx, broadcast_id)
    if broadcast is None:
        raise NotReady(f"broadcast {broadcast_id} is not known (yet)")
    if not broadcast.renditions and known is not None and known.renditions:
        broadcast = replace(broadcast, renditions=known.renditions)  # as seen while live
    existing = await asyncio.to_thread(ctx.catalog.get_vod, broadcast_id)
    if existing is not None and existing.state is VodState.DELETED:
        return existing
    if existing is not None and existing.state is VodState.COMPLETE:
        # Final: its logs may be gone already, and rendering what is left of them (a
        # record written after the verification, say) would shrink it.
        await asyncio.to_thread(ctx.catalog.drop_segment_records, broadcast_id)
        return existing
    logs = await _durable_logs(ctx, broadcast_id, broadcast.renditions, known)
    plan = plan_vod(broadcast_id, broadcast.renditions, logs,
                           target_duration_s=ctx.settings.target_segment_s)
    if plan.empty:
        if existing is None:
            logger.info("broadcast produced no segments: no VOD",
                        extra={"broadcast_id": broadcast_id})
            stored = await asyncio.to_thread(ctx.catalog.get_broadcast, broadcast_id)
            if stored is not None and stored.state is not BroadcastState.LIVE:
                await _forget_live(ctx, broadcast_id)  # nothing will ever be archived
        return existing  # made earlier, its segment log dropped once it was complete
    # Media playlists first, the master last: once the master exists the VOD plays.
    media, master = plan.playlists[:-1], plan.playlists[-1]
    await asyncio.gather(*(_put_playlist(ctx, key, text) for key, text in media))
    await _put_playlist(ctx, *master)

    if existing is not None:
        vod = replace(existing, duration_s=plan.duration_s,
                      state=VodState.COMPLETE if existing.state is VodState.COMPLETE
                      else VodState.PENDING)
    else:
        channel = await asyncio.to_thread(ctx.catalog.get_channel, broadcast.channel)
        visibility = channel.vod_visibility if channel is not None else None
        vod = Vod(id=broadcast_id, broadcast_id=broadcast_id, channel=broadcast.channel,
                  visibility=visibility or Visibility.PUBLIC, state=VodState.PENDING,
                  duration_s=plan.duration_s)
    await asyncio.to_thread(ctx.catalog.save_vod, vod)
    logger.info("VOD playlists written",
                extra={"broadcast_id": broadcast_id, "segments": plan.segments,
                       "renditions": list(plan.renditions),
                       "duration_s": round(plan.duration_s, 3),
                       "seconds": round(_mono() - started, 4)})
    return vod


def referenced_keys(playlist_key: str, text: str) -> list[str]:
    """Storage keys of every URI (segments, EXT-X-MAP) in a media playlist we wrote."""
    base = posixpath.dirname(playlist_key)
    keys: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        uri: str | None = None
        if line.startswith("#EXT-X-MAP:"):
            marker = 'URI="'
            at = line.find(marker)
            if at >= 0:
                end = line.find('"', at + len(marker))
                uri = line[at + len(marker):end] if end > 0 else None
        elif line and not line.startswith("#"):
            uri = line
        if uri is not None and "://" not in uri:
            keys.append(posixpath.normpath(posixpath.join(base, uri)))
    return keys


def master_renditions(text: str) -> list[str]:
    """Media playlist URIs of a master playlist we wrote (relative, one per variant)."""
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.startswith("#")]


def master_rendition_names(broadcast_id: str, text: str) -> list[str]:
    """The renditions the broadcast's master playlist lists, in its order."""
    base = posixpath.dirname(layout.master_key(broadcast_id))
    names: list[str] = []
    for uri in master_renditions(text):
        key = layout.parse_key(posixpath.normpath(posixpath.join(base, uri)))
        if isinstance(key, layout.RenditionKey):
            names.append(key.rendition)
    return names


async def _vod_objects(ctx: ArchiveContext, broadcast_id: str) -> dict[str, int] | None:
    """Key -> expected size (0: unknown) of every object the stored VOD playlists
    reference; None if the VOD has no master playlist yet."""
    master_text = await asyncio.to_thread(ctx.storage.get, layout.master_key(broadcast_id))
    if master_text is None:
        return None
    master = layout.master_key(broadcast_id)
    expected: dict[str, int] = {}
    for uri in master_renditions(master_text.decode()):
        key = posixpath.normpath(posixpath.join(posixpath.dirname(master), uri))
        data = await asyncio.to_thread(ctx.storage.get, key)
        if data is None:
            expected[key] = 0  # the media playlist itself is missing
            continue
        for ref in referenced_keys(key, data.decode()):
            expected.setdefault(ref, 0)
    broadcast = await _broadcast(ctx, broadcast_id)
    if broadcast is not None:  # sizes from the segment log, where it still exists
        for log in (await _durable_logs(ctx, broadcast_id, broadcast.renditions)).values():
            for segment in log:
                if segment.key in expected and segment.size > 0:
                    expected[segment.key] = segment.size
    return expected


async def verify_vod(ctx: ArchiveContext, vod_id: str, *, raise_incomplete: bool = True
                     ) -> Verification:
    """Check every object the VOD's playlists reference against one storage listing of the
    broadcast's prefix (sizes too, where the segment log recorded them). Complete: the
    VOD is marked so and the broadcast's segment log is dropped from the live state.
    Incomplete: :class:`VodIncomplete` (or a result, with ``raise_incomplete=False``)."""
    vod = await asyncio.to_thread(ctx.catalog.get_vod, vod_id)
    if vod is None or vod.state is VodState.DELETED:
        raise VodNotFound(f"no VOD {vod_id}")
    expected = await _vod_objects(ctx, vod.broadcast_id)
    if expected is None:
        raise NotReady(f"VOD {vod_id} has no playlists yet")
    prefix = layout.broadcast_prefix(vod.broadcast_id)
    stored = await asyncio.to_thread(
        lambda: {o.key: o.size for o in ctx.storage.list(prefix)})
    missing = sorted(k for k, size in expected.items()
                     if k not in stored or (size > 0 and stored[k] != size))
    result = Verification(vod_id, not missing, len(expected), tuple(missing))
    if missing:
        logger.info("VOD not complete yet", extra={"vod_id": vod_id, "missing": len(missing),
                                                    "checked": len(expected)})
        if raise_incomplete:
            raise VodIncomplete(vod_id, missing)
        return result
    if vod.state is not VodState.COMPLETE:
        current = await asyncio.to_thread(ctx.catalog.get_vod, vod_id) or vod
        await asyncio.to_thread(ctx.catalog.save_vod,
                                replace(current, state=VodState.COMPLETE))
        logger.info("VOD complete", extra={"vod_id": vod_id, "objects": len(expected)})
    broadcast = await asyncio.to_thread(ctx.catalog.get_broadcast, vod.broadcast_id)
    if broadcast is not None and broadcast.state is not BroadcastState.LIVE:
        # The stored VOD playlists are the record from now on.
        await _forget_live(ctx, vod.broadcast_id)
        await asyncio.to_thread(ctx.catalog.drop_segment_records, vod.broadcast_id)
    return result


async def _forget_live(ctx: ArchiveContext, broadcast_id: str) -> None:
    """An ended broadcast whose archive is settled leaves the live state: its segment
    log, record, stats, windows and media. Nothing else forgets them, so without this
    every broadcast a process ever ran stays in its memory (embedded) or in Redis, and
    every listing of the live state walks them all."""
    await ctx.live.drop_segment_log(broadcast_id)
    await ctx.live.remove_broadcast(broadcast_id)


# -- reading media back ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class MediaRef:
    """One segment of a VOD media playlist: its key, init segment and timing."""

    key: str
    init_key: str | None
    duration_s: float
    discontinuity: bool


def parse_media_playlist(playlist_key: str, text: str) -> list[MediaRef]:
    base = posixpath.dirname(playlist_key)
    refs: list[MediaRef] = []
    init: str | None = None
    duration = 0.0
    discontinuity = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-MAP:"):
            init = referenced_keys(playlist_key, line)[0] if 'URI="' in line else None
        elif line.startswith("#EXTINF:"):
            with contextlib.suppress(ValueError):
                duration = float(line[len("#EXTINF:"):].split(",", 1)[0])
        elif line == "#EXT-X-DISCONTINUITY":
            discontinuity = True
        elif line and not line.startswith("#"):
            refs.append(MediaRef(posixpath.normpath(posixpath.join(base, line)), init,
                                 duration, discontinuity))
            duration, discontinuity = 0.0, False
    return refs


def _get(storage: Storage, key: str) -> bytes:
    data = storage.get(key)
    if data is None:
        raise NotReady(f"{key} is not in storage")
    return data


def _groups(refs: Sequence[MediaRef]) -> list[list[MediaRef]]:
    """Runs of segments that concatenate into one stream (same init, no discontinuity)."""
    groups: list[list[MediaRef]] = []
    for ref in refs:
        if not groups or ref.discontinuity or ref.init_key != groups[-1][-1].init_key:
            groups.append([])
        groups[-1].append(ref)
    return groups


# -- MP4 export -----------------------------------------------------------------------------

def remux_to_mp4(storage: Storage, refs: Sequence[MediaRef], out_path: Path, workdir: Path,
                 progress: Callable[[float], None] | None = None) -> float:
    """Concatenate the segments (per init/discontinuity group) and remux every packet,
    unchanged, into one MP4 with the moov atom first (``movflags=+faststart``). Timestamps
    of each group continue where the previous group ended. Returns the media duration."""
    groups = _groups(refs)
    total = max(1, len(refs))
    done = 0
    out = av.open(str(out_path), "w", format="mp4", options={"movflags": "+faststart"})
    try:
        out_streams: dict[str, Any] = {}
        offset_s = 0.0
        end_s = 0.0
        first = True
        for group in groups:
            concat = workdir / "group.bin"
            with concat.open("wb") as f:
                if group[0].init_key is not None:
                    f.write(_get(storage, group[0].init_key))
                for ref in group:
                    f.write(_get(storage, ref.key))
            with av.open(str(concat), "r") as src:
                mapping: dict[int, Any] = {}
                for stream in src.streams:
                    if stream.type not in ("video", "audio"):
                        continue
                    if stream.type not in out_streams:
                        out_streams[stream.type] = out.add_stream_from_template(stream)
                    mapping[stream.index] = out_streams[stream.type]
                starts = [float(s.start_time * s.time_base) for s in src.streams
                          if s.index in mapping and s.start_time is not None
                          and s.time_base is not None]
                group_start = min(starts, default=0.0)
                if first:
                    offset_s = group_start  # the first group keeps its own timestamps
                    first = False
                for packet in src.demux(*[s for s in src.streams if s.index in mapping]):
                    if packet.dts is None or packet.size == 0 or packet.time_base is None:
                        continue
                    tb = packet.time_base
                    target = mapping[packet.stream.index]
                    shift = round((offset_s - group_start) / tb)
                    packet.dts += shift
                    if packet.pts is not None:
                        packet.pts += shift
                        end_s = max(end_s, float((packet.pts + (packet.duration or 0)) * tb))
                    packet.stream = target
                    out.mux(packet)
            concat.unlink()
            done += len(group)
            offset_s = end_s
            if progress is not None:
                progress(min(0.99, done / total))
    finally:
        out.close()
    return end_s


async def export_mp4(ctx: ArchiveContext, vod_id: str, *,
                     workdir: Path | None = None) -> Vod:
    """Remux the VOD's source rendition into ``broadcasts/{id}/export.mp4``; progress
    (0..1) is saved on the VOD in the catalog as it goes."""
    vod = await asyncio.to_thread(ctx.catalog.get_vod, vod_id)
    if vod is None or vod.state is VodState.DELETED:
        raise VodNotFound(f"no VOD {vod_id}")
    broadcast = await _broadcast(ctx, vod.broadcast_id)
    master_text = await asyncio.to_thread(ctx.storage.get, layout.master_key(vod.broadcast_id))
    if master_text is None:
        raise NotReady(f"VOD {vod_id} has no playlists yet")
    names = master_rendition_names(vod.broadcast_id, master_text.decode())
    renditions = [r for r in (broadcast.renditions if broadcast else ()) if r.name in names]
    chosen = source_rendition(renditions)
    name = chosen.name if chosen is not None else names[0]
    playlist_key = layout.media_playlist_key(vod.broadcast_id, name)
    text = await asyncio.to_thread(_get, ctx.storage, playlist_key)
    refs = parse_media_playlist(playlist_key, text.decode())
    key = layout.export_key(vod.broadcast_id)

    last_save = [0.0]

    def progress(value: float) -> None:
        now = _mono()
        if now - last_save[0] < PROGRESS_EVERY_S:
            return
        last_save[0] = now
        current = ctx.catalog.get_vod(vod_id)
        if current is not None:
            ctx.catalog.save_vod(replace(current, mp4_progress=value))

    def run() -> float:
        progress(0.0)
        tmp = Path(tempfile.mkdtemp(prefix="castway-export-", dir=workdir))
        try:
            out = tmp / "export.mp4"
            duration = remux_to_mp4(ctx.storage, refs, out, tmp, progress)
            ctx.storage.put_file(key, out, content_type="video/mp4", cache_control=IMMUTABLE)
            return duration
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    started = _mono()
    duration = await asyncio.to_thread(run)
    elapsed = _mono() - started
    current = await asyncio.to_thread(ctx.catalog.get_vod, vod_id) or vod
    vod = replace(current, mp4_key=key, mp4_progress=1.0)
    await asyncio.to_thread(ctx.catalog.save_vod, vod)
    logger.info("MP4 exported", extra={"vod_id": vod_id, "rendition": name,
                                       "duration_s": round(duration, 3),
                                       "seconds": round(elapsed, 3),
                                       "x_realtime": round(duration / max(elapsed, 1e-6), 1)})
    return vod


# -- thumbnails -----------------------------------------------------------------------------

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


def _even(value: float) -> int:
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


def _poster_size(frame: av.VideoFrame) -> tuple[int, int]:
    width = min(frame.width, POSTER_MAX_WIDTH)
    return _even(width), _even(frame.height * width / frame.width)


async def make_poster(ctx: ArchiveContext, broadcast_id: str) -> bool:
    """(Re)write ``poster.jpg`` from the newest segment of the broadcast's smallest
    rendition; called on a timer while live and once at the end. False if there is no
    segment yet."""
    broadcast = await _broadcast(ctx, broadcast_id)
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
        return encode_jpeg(frame, *_poster_size(frame))

    jpeg = await asyncio.to_thread(render)
    if jpeg is None:
        return False
    # Refreshed while live: cacheable briefly, never immutable.
    await asyncio.to_thread(ctx.storage.put, layout.poster_key(broadcast_id), jpeg,
                            content_type="image/jpeg", cache_control=VOD_PLAYLIST)
    return True


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
    master = await asyncio.to_thread(ctx.storage.get, layout.master_key(broadcast_id))
    if master is None:
        raise NotReady(f"broadcast {broadcast_id} has no VOD playlists yet")
    names = master_rendition_names(broadcast_id, master.decode())
    broadcast = await _broadcast(ctx, broadcast_id)
    renditions = [r for r in (broadcast.renditions if broadcast else ()) if r.name in names]
    chosen = smallest_rendition(renditions)
    name = chosen.name if chosen is not None else names[0]
    playlist_key = layout.media_playlist_key(broadcast_id, name)
    text = await asyncio.to_thread(_get, ctx.storage, playlist_key)
    refs = parse_media_playlist(playlist_key, text.decode())
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
                        inits[ref.init_key] = _get(ctx.storage, ref.init_key)
                    init = inits[ref.init_key]
                decoded[ref.key] = decode_keyframe(init, _get(ctx.storage, ref.key))
            frame = decoded[ref.key]
            if frame is None:
                return None
            frames.append(frame)
        first = frames[0]
        tile_w = THUMB_WIDTH
        tile_h = _even(first.height * tile_w / first.width)
        sprite = build_sprite(frames, tile_w, tile_h)
        poster = encode_jpeg(first, *_poster_size(first))
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


# -- retention ------------------------------------------------------------------------------

async def expire_vods(ctx: ArchiveContext, now: datetime) -> list[str]:
    """Delete every VOD older than ``vod_retention_days`` at ``now``: its objects under
    ``broadcasts/{id}/`` first, then its catalog record (a crash in between is finished
    by the next run). Returns the ids deleted."""
    days = ctx.settings.vod_retention_days
    if days is None:
        return []
    cutoff = now - timedelta(days=days)
    vods = await asyncio.to_thread(lambda: ctx.catalog.list_vods(limit=EXPIRE_BATCH))
    expired: list[str] = []
    for vod in vods:
        if vod.created_at >= cutoff:
            continue
        try:
            objects = await asyncio.to_thread(ctx.storage.delete_prefix,
                                              layout.broadcast_prefix(vod.broadcast_id))
        except StorageError as e:
            logger.warning("could not delete an expired VOD's objects; next run retries",
                           extra={"vod_id": vod.id, "error": str(e)})
            continue
        await ctx.live.drop_segment_log(vod.broadcast_id)
        await asyncio.to_thread(ctx.catalog.delete_vod, vod.id)
        expired.append(vod.id)
        logger.info("VOD expired", extra={"vod_id": vod.id, "objects": objects,
                                          "created_at": vod.created_at.isoformat()})
    return expired
