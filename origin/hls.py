"""HLS delivery (``router``): live (LL-HLS with blocking reload and delta updates, RFC
8216bis 6.2.5), time-shift, VOD. Media playlists use relative URIs, so the origin works
under any prefix or CDN host.

Design: docs/origin.md, "URLs" and "LL-HLS: blocking reloads".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

from fastapi import APIRouter, Request
from starlette.responses import Response

from castway.hls.playlist import (
    PlaylistType,
    RenditionReport,
    render_master_playlist,
    render_media_playlist,
    rendition_report,
    segment_starts,
    source_bitrate_kbps,
    target_duration,
)
from castway.layout import (
    BroadcastFile,
    BroadcastKey,
    MediaName,
    PartName,
    RenditionFile,
    RenditionKey,
    broadcast_prefix,
    export_key,
    master_key,
    parse_media_name,
    valid_component,
)
from castway.live.base import RenditionWindow, playlist_segments
from castway.model import (
    SOURCE_RENDITION,
    Broadcast,
    BroadcastState,
    Rendition,
    Visibility,
    Vod,
    VodState,
    valid_channel_name,
)
from castway.settings import FirstVariant, Settings
from castway.storage.base import content_type_for
from origin.access import (
    PRIVATE_LIVE_PLAYLIST,
    PRIVATE_MEDIA,
    MediaAccess,
)
from origin.context import Ctx, OriginContext, Rendered
from origin.playlist_query import BadPlaylistQuery, parse_playlist_query
from origin.responses import (
    CacheKind,
    bytes_response,
    error_response,
    etag_for,
)

logger = logging.getLogger(__name__)

router = APIRouter(tags=["hls"])

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
# rfc8216bis 6.2.5.2: _HLS_msn more than two segments past the last one is a Bad Request.
MAX_MSN_AHEAD = 2
# Until every rendition of the ladder has media, playlists are answered 503 with this
# Retry-After (seconds) and the short error Cache-Control: a CDN keeps the refusal for a
# second at most, and no player ever reads a master that lists part of the ladder.
NOT_READY_RETRY_AFTER_S = 1
# A blocked request is answered 503 after this many target durations.
BLOCK_TIMEOUT_TARGET_DURATIONS = 3.0
# Part requests ahead of the live edge that may block (the preload hint and the next).
MAX_PART_AHEAD = 2
# The files of a broadcast served beside its media (the master playlist and the MP4 export
# are the VOD's: /vod/ and the control API serve them).
BROADCAST_FILES = frozenset({BroadcastFile.POSTER, BroadcastFile.SPRITE,
                             BroadcastFile.SPRITE_VTT})


def media_uri(broadcast_id: str, depth: int) -> Callable[[str], str]:
    """Relative URI of a live-window/storage key from a playlist ``depth`` levels below
    /hls/: /hls/b/ mirrors the broadcast's directory (castway.layout)."""
    up = "../" * depth
    prefix = broadcast_prefix(broadcast_id)

    def uri_for_key(key: str) -> str:
        if not key.startswith(prefix):
            raise ValueError(f"key {key!r} is not under {prefix!r}")
        return f"{up}b/{broadcast_id}/{key.removeprefix(prefix)}"

    return uri_for_key


def channel_media_uri(broadcast_id: str) -> Callable[[str], str]:
    """Relative URI of a key from a private channel's live media playlist
    (``/hls/{channel}/{rendition}/index.m3u8``): its media is served under the channel's
    path (``/hls/{channel}/b/...``), which its viewers' grant covers."""
    prefix = broadcast_prefix(broadcast_id)

    def uri_for_key(key: str) -> str:
        if not key.startswith(prefix):
            raise ValueError(f"key {key!r} is not under {prefix!r}")
        return f"../b/{broadcast_id}/{key.removeprefix(prefix)}"

    return uri_for_key


def _playlist(request: Request, text: str | Rendered, cache: CacheKind | str) -> Response:
    """A playlist response. Its ETag is weak: the gzip middleware may re-encode the body,
    and a strong validator would then name two different byte sequences (RFC 9110 8.8.3)."""
    rendered = text if isinstance(text, Rendered) else Rendered.of(text)
    return bytes_response(request, rendered.body, key="index.m3u8", cache=cache,
                          etag="W/" + rendered.etag, content_type=PLAYLIST_TYPE)


def _not_ready(detail: str) -> Response:
    return error_response(503, detail, headers={"retry-after": str(NOT_READY_RETRY_AFTER_S)})


async def _ladder_ready(ctx: OriginContext, broadcast: Broadcast) -> bool:
    """Whether every rendition of the broadcast's ladder has its first whole segment.
    The transcoder publishes the ladder whole and never changes its variant set
    (transcoder.pipeline), so this is decided once per broadcast: the master and every
    media playlist (plain or blocking) wait for it alike.

    A segment, not just a part: a media playlist of parts only has no Media Segment, and
    players treat it as empty (hls.js raises levelEmptyError and retries; a strict player
    gives up). Waiting costs the first viewers of a broadcast one segment, once."""
    if broadcast.id in ctx.ready_ladders:
        return True
    if not broadcast.renditions:
        return False
    for rendition in broadcast.renditions:
        window = await ctx.live.get_window(broadcast.id, rendition.name)
        if window is None or not window.segments:
            return False
        if (rendition.name == SOURCE_RENDITION and _source_first_wanted(ctx.settings)
                and not window.ended and _starts_on_keyframes(window) is None):
            # Whether the master may list the source first is known at its second
            # segment's start (docs/origin.md, "The first variant"): at most a part more.
            return False
    ctx.ready_ladders.add(broadcast.id)
    return True


def _source_first_wanted(settings: Settings) -> bool:
    return settings.master_first_variant is FirstVariant.SOURCE


def _starts_on_keyframes(window: RenditionWindow) -> bool | None:
    """Whether every segment of the window begins with a keyframe, as its first part says;
    None until a second segment has begun (the first proves nothing: every broadcast
    begins on a keyframe) or without parts (MPEG-TS)."""
    starts = segment_starts(window.segments, window.parts)
    return all(starts) if len(starts) >= 2 else None


async def _first_variant(ctx: OriginContext, broadcast: Broadcast) -> str | None:
    """Where players start. The passthrough by default: a player that starts on an
    encoded rung and then switches up keeps the rung's encoder delay as latency for the
    rest of the broadcast (hls.js never plays faster than 1x by default). But only a
    passthrough whose segments begin with keyframes: a player cannot start on one that
    does not (a source with a keyframe interval above the segment target; hls.js:
    bufferAppendNoProgress), while every encoded rung's segment begins with an IDR."""
    if not _source_first_wanted(ctx.settings) or not any(
            r.name == SOURCE_RENDITION for r in broadcast.renditions):
        return None
    window = await ctx.live.get_window(broadcast.id, SOURCE_RENDITION)
    if window is None or not _starts_on_keyframes(window):
        return None  # ascending bandwidth: the lowest first
    return SOURCE_RENDITION


def _with_source_estimate(broadcast: Broadcast, stats: dict[str, float | str]
                          ) -> tuple[Rendition, ...]:
    """The ladder as the master lists it: a passthrough rendition without a measured
    peak yet is given the publisher's own bitrate (onMetaData videodatarate, else what
    ingest observed), so its BANDWIDTH is the source's, not a placeholder."""
    value = stats.get("bitrate_kbps")
    observed = float(value) if isinstance(value, float | int) else None
    out = []
    for r in broadcast.renditions:
        # Only the source's: an encoder-sent rendition (track 1 and up) is measured.
        if r.bandwidth_bps is None and r.video_bitrate_kbps is None and not r.track:
            estimate = source_bitrate_kbps(broadcast.source, observed,
                                           audio_only=r.width is None)
            if estimate is not None:
                r = replace(r, video_bitrate_kbps=estimate)
        out.append(r)
    return tuple(out)


async def _live(ctx: OriginContext, channel: str,
                request: Request) -> tuple[Broadcast, bool] | Response:
    """The channel's live broadcast and whether the channel is private (then the request
    carries a valid signature for ``/hls/{channel}/*``), else the error response."""
    if not valid_channel_name(channel):
        return error_response(404, "no such channel")
    private = await ctx.channel_access.private(channel)
    if private and not ctx.access.allows(request):
        if not ctx.access.enabled:
            return error_response(404, "no such channel")
        return error_response(403, "this channel is private: a valid signature is required")
    broadcast = await ctx.live.live_broadcast(channel)
    if broadcast is None or broadcast.state is not BroadcastState.LIVE:
        return error_response(404, f"channel {channel} is not live")
    return broadcast, private


@router.head("/hls/{channel}/master.m3u8", include_in_schema=False)
@router.get("/hls/{channel}/master.m3u8", response_class=Response,
            summary="Live multivariant playlist")
async def live_master(channel: str, request: Request, ctx: Ctx) -> Response:
    found = await _live(ctx, channel, request)
    if isinstance(found, Response):
        return found
    broadcast, private = found
    # Never part of the ladder: players (and a CDN) read the master once, and a
    # variant missing from it is one they never get.
    if not await _ladder_ready(ctx, broadcast):
        return _not_ready("the broadcast's renditions are starting")
    suffix = "" if request.query_params.get("ll", "1") != "0" else "?ll=0"
    renditions = _with_source_estimate(broadcast, await ctx.live.get_stats(broadcast.id))
    text = render_master_playlist(renditions,
                                  uri_for=lambda r: f"{r.name}/index.m3u8{suffix}",
                                  first=await _first_variant(ctx, broadcast))
    return _playlist(request, text,
                     PRIVATE_LIVE_PLAYLIST if private else CacheKind.LIVE_PLAYLIST)


@router.head("/hls/{channel}/{rendition}/index.m3u8", include_in_schema=False)
@router.get("/hls/{channel}/{rendition}/index.m3u8", response_class=Response,
            summary="Live media playlist (LL-HLS)")
async def live_media(channel: str, rendition: str, request: Request, ctx: Ctx) -> Response:
    found = await _live(ctx, channel, request)
    if isinstance(found, Response):
        return found
    broadcast, private = found
    names = [r.name for r in broadcast.renditions]
    if rendition not in names:
        if valid_component(rendition) and _stopped(
                await ctx.live.get_window(broadcast.id, rendition)):
            return _stopped_response(rendition)
        return error_response(404, f"no rendition {rendition}")
    try:
        query = parse_playlist_query(request.query_params)
    except BadPlaylistQuery as exc:
        return error_response(400, str(exc))
    msn, part, low_latency = query.msn, query.part, query.low_latency
    if not await _ladder_ready(ctx, broadcast):
        # The same rule as the master's, blocking requests included (held connections
        # for a broadcast no player can have a master of yet would only pile up): no
        # media playlist before the whole ladder has media, so its rendition reports
        # name every other rendition.
        return _not_ready("the broadcast's renditions are starting")
    window = await ctx.live.get_window(broadcast.id, rendition)
    cache: CacheKind | str = CacheKind.LIVE_PLAYLIST
    if msn is not None:
        if window is not None and msn > window.next_msn - 1 + MAX_MSN_AHEAD:
            return error_response(400, f"_HLS_msn={msn} is more than {MAX_MSN_AHEAD} "
                                  f"segments past the last one ({window.next_msn - 1})")
        window = await _block(ctx, broadcast, rendition, window, msn, part)
        if window is None:
            return error_response(503, "the requested part did not become available",
                                  headers={"retry-after": "1"})
        cache = CacheKind.BLOCKING_PLAYLIST
    if window is None:
        return _not_ready("the rendition has no media yet")
    if window.stopped:
        return _stopped_response(rendition)
    reports: list[RenditionReport] = []
    if low_latency and not window.ended:
        for other in names:
            if other == rendition:
                continue
            other_window = await ctx.report_windows.get(broadcast.id, other)
            if other_window is not None:
                reports.append(rendition_report(other_window, f"../{other}/index.m3u8"))
    skip = low_latency and query.skip is not None
    cache_key = ("live", broadcast.id, rendition, low_latency, skip, private,
                 tuple(reports))
    rendered = ctx.renders.get(cache_key, window)
    if rendered is None:
        rendered = Rendered.of(render_media_playlist(
            window, uri_for_key=channel_media_uri(broadcast.id) if private
            else media_uri(broadcast.id, 2), low_latency=low_latency,
            skip=skip, rendition_reports=reports))
        ctx.renders.put(cache_key, window, rendered)
    return _playlist(request, rendered, PRIVATE_LIVE_PLAYLIST if private else cache)


def _stopped(window: RenditionWindow | None) -> bool:
    return window is not None and window.stopped


def _stopped_response(rendition: str) -> Response:
    """A rendition overload stopped while the broadcast goes on (transcoder.overload).
    Not its EXT-X-ENDLIST: a player ends the presentation at the end of a playlist
    with one. A 4xx on a media playlist makes hls.js switch to another variant at once
    (it retries only 5xx; rfc8216bis 6.3.4: a client whose playlist fails to load tries
    another variant); Shaka 5.2.12 takes it for a fatal error (docs/transcoder.md)."""
    return error_response(410, f"rendition {rendition} stopped: the transcoder is short "
                          "of CPU and gave it up; play another variant of the master")


async def _block(ctx: OriginContext, broadcast: Broadcast, rendition: str,
                 window: RenditionWindow | None, msn: int,
                 part: int | None) -> RenditionWindow | None:
    """Hold the request until ``msn``/``part`` exists (rfc8216bis 6.2.5.2)."""
    from origin.notify import window_has

    if window is not None and window_has(window, msn, part):
        return window
    td = target_duration(window) if window is not None else \
        max(1, round(ctx.settings.target_segment_s))
    ctx.metrics.blocked_reloads.inc()
    try:
        woken = await ctx.notifier.wait_for(broadcast.id, rendition, msn, part,
                                            BLOCK_TIMEOUT_TARGET_DURATIONS * td)
    finally:
        ctx.metrics.blocked_reloads.dec()
    if woken is None:
        ctx.metrics.blocked_timeouts.inc()
    return woken


@router.head("/hls/{channel}/{rendition}/dvr.m3u8", include_in_schema=False)
@router.get("/hls/{channel}/{rendition}/dvr.m3u8", response_class=Response,
            summary="Time-shift (DVR) playlist of the live broadcast")
async def live_dvr(channel: str, rendition: str, request: Request, ctx: Ctx) -> Response:
    found = await _live(ctx, channel, request)
    if isinstance(found, Response):
        return found
    broadcast, private = found
    if rendition not in [r.name for r in broadcast.renditions]:
        return error_response(404, f"no rendition {rendition}")
    log = await ctx.live.segment_log(broadcast.id, rendition)
    if not log:
        return error_response(404, "the rendition has no segments yet")
    sliding = ctx.settings.dvr_window_s is not None
    if ctx.settings.dvr_window_s is not None:
        kept = 0.0
        start = len(log)
        while start > 0 and kept < ctx.settings.dvr_window_s:
            start -= 1
            kept += log[start].duration_s
        log = log[start:]
    live_window = await ctx.live.get_window(broadcast.id, rendition)
    segments, discontinuity_seq = playlist_segments(log)
    window = RenditionWindow(
        segments=segments, next_msn=log[-1].msn + 1,
        target_duration_s=(live_window.target_duration_s if live_window
                           else ctx.settings.target_segment_s),
        init_key=log[-1].init_key, discontinuity_seq=discontinuity_seq,
        ended=bool(live_window and live_window.ended))
    text = render_media_playlist(
        window, uri_for_key=channel_media_uri(broadcast.id) if private
        else media_uri(broadcast.id, 2),
        playlist_type=PlaylistType.LIVE if sliding else PlaylistType.EVENT)
    return _playlist(request, text,
                     PRIVATE_LIVE_PLAYLIST if private else CacheKind.LIVE_PLAYLIST)


@router.head("/hls/b/{broadcast_id}/{rendition}/{name}", include_in_schema=False)
@router.get("/hls/b/{broadcast_id}/{rendition}/{name}", response_class=Response,
            summary="Init segment, segment or part")
async def broadcast_media(broadcast_id: str, rendition: str, name: str, request: Request,
                          ctx: Ctx) -> Response:
    parsed = parse_media_name(name)
    if parsed is None or not (valid_component(broadcast_id) and valid_component(rendition)):
        return error_response(404, "not found")
    access = await _broadcast_access(ctx, broadcast_id, request, f"{rendition}/{name}")
    if isinstance(access, Response):
        return access
    return await _media(ctx, request, broadcast_id, rendition, parsed, access)


@router.head("/hls/{channel}/b/{broadcast_id}/{rendition}/{name}", include_in_schema=False)
@router.get("/hls/{channel}/b/{broadcast_id}/{rendition}/{name}", response_class=Response,
            summary="Init segment, segment or part of a private channel's live broadcast")
async def channel_media(channel: str, broadcast_id: str, rendition: str, name: str,
                        request: Request, ctx: Ctx) -> Response:
    """A private channel's live media, under the channel's path (which its grant covers,
    cookies included): only while the broadcast is live on that channel, and only with
    a valid signature. Public channels' media is at /hls/b/ (unchanged)."""
    parsed = parse_media_name(name)
    if parsed is None or not (valid_channel_name(channel) and valid_component(broadcast_id)
                              and valid_component(rendition)):
        return error_response(404, "not found")
    access = await ctx.media_access.get(broadcast_id)
    if access is not MediaAccess.LIVE_PRIVATE:
        return error_response(404, "not found")
    broadcast = await ctx.live.get_broadcast(broadcast_id)
    if broadcast is None or broadcast.channel != channel:
        return error_response(404, "not found")
    if not ctx.access.allows(request):
        return error_response(403 if ctx.access.enabled else 404,
                              "this channel is private: a valid signature is required")
    return await _media(ctx, request, broadcast_id, rendition, parsed, access)


async def _media(ctx: OriginContext, request: Request, broadcast_id: str, rendition: str,
                 parsed: MediaName, access: MediaAccess) -> Response:
    key = str(RenditionKey(broadcast_id, rendition, parsed))
    part = parsed if isinstance(parsed, PartName) else None
    data = await _fetch(ctx, key, stored=part is None)
    if data is None:
        if part is not None:
            data = await _block_for_part(ctx, broadcast_id, rendition, key, part.msn,
                                         part.index)
    if data is None:
        return error_response(404, "not found")
    return bytes_response(request, data, key=key, cache=access.media_cache,
                          etag=etag_for(f"{key}:{len(data)}"))


async def _broadcast_access(ctx: OriginContext, broadcast_id: str, request: Request,
                            name: str) -> MediaAccess | Response:
    """The broadcast's access rule (origin.access.MediaAccess), or the refusal. A private
    channel's live media is served here only with a signature for the same object under
    the channel's path (a signed URL: a browser sends the grant's cookies there only)."""
    access = await ctx.media_access.get(broadcast_id)
    if access.served:
        return access
    if access is MediaAccess.LIVE_PRIVATE:
        broadcast = await ctx.live.get_broadcast(broadcast_id)
        if broadcast is not None and ctx.access.allows(
                request, as_path=f"/hls/{broadcast.channel}/b/{broadcast_id}/{name}"):
            return access
        if ctx.access.enabled:
            return error_response(403, "this broadcast's channel is private: a valid "
                                  "signature is required")
        return error_response(404, "not found")
    if access is MediaAccess.PRIVATE and ctx.access.enabled:
        return error_response(403, "this broadcast has ended and its VOD is private: play "
                              f"/vod/{broadcast_id}/master.m3u8 with a valid signature")
    return error_response(404, "not found")


async def _fetch(ctx: OriginContext, key: str, *, stored: bool = True) -> bytes | None:
    """From the live state, else (``stored``: not a part, parts live in the live window
    only) from storage. Every LL-HLS player asks for parts before they exist; sending
    those to storage would only give a stalled S3 more requests to hold."""
    data = await ctx.live.get_media(key)
    if data is None and stored:
        data = await ctx.storage_pool.run(ctx.storage.get, key)
    return data


async def _block_for_part(ctx: OriginContext, broadcast_id: str, rendition: str, key: str,
                          msn: int, part: int) -> bytes | None:
    """A request for the preload-hinted part (or the one after) waits for it
    (rfc8216bis 6.2.6: the server holds a request for a hinted resource)."""
    window = await ctx.live.get_window(broadcast_id, rendition)
    if window is None or window.ended:
        return None
    newest = window.parts[-1].index if window.parts else -1
    hinted = key == window.preload_hint
    ahead = (msn == window.next_msn and part <= newest + MAX_PART_AHEAD) or \
        (msn == window.next_msn + 1 and part == 0)
    if not (hinted or ahead):
        return None
    ctx.metrics.blocked_reloads.inc()
    try:
        woken = await ctx.notifier.wait_for(
            broadcast_id, rendition, msn, part,
            BLOCK_TIMEOUT_TARGET_DURATIONS * target_duration(window))
    finally:
        ctx.metrics.blocked_reloads.dec()
    if woken is None:
        ctx.metrics.blocked_timeouts.inc()
        return None
    return await _fetch(ctx, key, stored=False)


@router.head("/hls/b/{broadcast_id}/{name}", include_in_schema=False)
@router.get("/hls/b/{broadcast_id}/{name}", response_class=Response,
            summary="Poster and thumbnails of a broadcast")
async def broadcast_file(broadcast_id: str, name: str, request: Request, ctx: Ctx) -> Response:
    if not valid_component(broadcast_id) or name not in BROADCAST_FILES:
        return error_response(404, "not found")
    access = await _broadcast_access(ctx, broadcast_id, request, name)
    if isinstance(access, Response):
        return access
    key = str(BroadcastKey(broadcast_id, BroadcastFile(name)))
    data = await ctx.storage_pool.run(ctx.storage.get, key)
    if data is None:
        return error_response(404, "not found")
    return bytes_response(request, data, key=key, cache=access.file_cache)


# Private VODs are served only with a signature; never from a shared cache.
PRIVATE_PLAYLIST = "private, max-age=60"


async def _vod_broadcast(ctx: OriginContext, vod_id: str,
                         request: Request) -> tuple[Vod, bool] | Response:
    """(the VOD, private) of a servable VOD, else the error response."""
    if not valid_component(vod_id):
        return error_response(404, "no such VOD")
    vod = await asyncio.to_thread(ctx.catalog.get_vod, vod_id)
    if vod is None or vod.state is VodState.DELETED:
        return error_response(404, "no such VOD")
    private = vod.visibility is Visibility.PRIVATE
    if private and not ctx.access.allows(request):
        if not ctx.access.enabled:
            return error_response(404, "no such VOD")
        return error_response(403, "this VOD is private: a valid signature is required")
    return vod, private


@router.head("/vod/{vod_id}/master.m3u8", include_in_schema=False)
@router.get("/vod/{vod_id}/master.m3u8", response_class=Response,
            summary="VOD multivariant playlist")
async def vod_master(vod_id: str, request: Request, ctx: Ctx) -> Response:
    found = await _vod_broadcast(ctx, vod_id, request)
    if isinstance(found, Response):
        return found
    vod, private = found
    key = master_key(vod.id)  # a clip's own playlists
    data = await ctx.storage_pool.run(ctx.storage.get, key)
    if data is None:
        return error_response(404, "the VOD has no playlist yet")
    return bytes_response(request, data, key=key,
                          cache=PRIVATE_PLAYLIST if private else CacheKind.VOD_PLAYLIST)


@router.head("/vod/{vod_id}/export.mp4", include_in_schema=False)
@router.get("/vod/{vod_id}/export.mp4", response_class=Response,
            summary="The VOD as one MP4 (once exported: POST /api/v1/vods/{id}/export)")
async def vod_export(vod_id: str, request: Request, ctx: Ctx) -> Response:
    found = await _vod_broadcast(ctx, vod_id, request)
    if isinstance(found, Response):
        return found
    vod, private = found
    if vod.mp4_key is None:
        return error_response(404, "the VOD has not been exported")
    key = export_key(vod.id)
    data = await ctx.storage_pool.run(ctx.storage.get, key)
    if data is None:
        return error_response(404, "the VOD has not been exported")
    response = bytes_response(request, data, key=key,
                              cache=PRIVATE_MEDIA if private else CacheKind.MEDIA,
                              etag=etag_for(f"{key}:{len(data)}"), content_type="video/mp4")
    response.headers["content-disposition"] = f'attachment; filename="{vod.id}.mp4"'
    return response


@router.head("/vod/{vod_id}/{rendition}/{name}", include_in_schema=False)
@router.get("/vod/{vod_id}/{rendition}/{name}", response_class=Response,
            summary="VOD media playlist, init and segments")
async def vod_media(vod_id: str, rendition: str, name: str, request: Request,
                    ctx: Ctx) -> Response:
    parsed = parse_media_name(name)
    if parsed is None or not valid_component(rendition):
        return error_response(404, "not found")
    found = await _vod_broadcast(ctx, vod_id, request)
    if isinstance(found, Response):
        return found
    vod, private = found
    # A clip's playlists are its own; its media is its source's (archiver/clips.py), and
    # may be so recent (a clip of a live broadcast) that it is still in the live window.
    own = isinstance(parsed, RenditionFile)
    key = str(RenditionKey(vod.id if own else vod.broadcast_id, rendition, parsed))
    if vod.is_clip and not own:
        data = await ctx.storage_pool.run(ctx.storage.get, key) or \
            await ctx.live.get_media(key)
    else:
        data = await ctx.storage_pool.run(ctx.storage.get, key)
    if data is None:
        return error_response(404, "not found")
    playlist = content_type_for(key) == PLAYLIST_TYPE
    if private:
        cache: CacheKind | str = PRIVATE_PLAYLIST if playlist else PRIVATE_MEDIA
    else:
        cache = CacheKind.VOD_PLAYLIST if playlist else CacheKind.MEDIA
    return bytes_response(request, data, key=key, cache=cache,
                          etag=None if playlist else etag_for(f"{key}:{len(data)}"))
