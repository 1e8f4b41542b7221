"""Reading a stored VOD back: the objects its playlists reference, and the segments of one
of its renditions in order."""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from archiver.context import ArchiveContext, NotReady, find_broadcast
from castway import layout
from castway.hls.reading import parse_multivariant
from castway.model import Rendition, Segment
from castway.storage.base import Storage


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
    """Media playlist URIs of a master playlist we wrote (relative): one per variant, then
    one per audio rendition (EXT-X-MEDIA URI, castway.hls.playlist)."""
    master = parse_multivariant(text)
    return [v.uri for v in master.variants] + [a.uri for a in master.audio]


def media_playlist_keys(broadcast_id: str, text: str) -> list[str]:
    """Storage keys of the media playlists the broadcast's master playlist lists, in its
    order."""
    base = posixpath.dirname(layout.master_key(broadcast_id))
    return [posixpath.normpath(posixpath.join(base, uri)) for uri in master_renditions(text)]


def master_rendition_names(broadcast_id: str, text: str) -> list[str]:
    """The renditions the broadcast's master playlist lists, in its order."""
    names: list[str] = []
    for playlist_key in media_playlist_keys(broadcast_id, text):
        key = layout.parse_key(playlist_key)
        if isinstance(key, layout.RenditionKey):
            names.append(key.rendition)
    return names


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


EPOCH = datetime.fromtimestamp(0, UTC)


def stored_segments(playlist_key: str, text: str) -> list[Segment]:
    """The segment log back from a VOD media playlist we wrote (a clip of an ended
    broadcast starts from it: the broadcast's own logs are dropped once its VOD is
    complete). Segments whose key the layout does not know are left out."""
    segments: list[Segment] = []
    at = 0.0
    seq = 0
    pdt: datetime | None = None
    pdts: list[datetime | None] = []  # the date of each segment, in playlist order
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            with contextlib.suppress(ValueError):
                pdt = datetime.fromisoformat(line.split(":", 1)[1])
        elif line and not line.startswith("#"):
            pdts.append(pdt)
            pdt = None
    for index, ref in enumerate(parse_media_playlist(playlist_key, text)):
        key = layout.parse_key(ref.key)
        if not (isinstance(key, layout.RenditionKey)
                and isinstance(key.name, layout.SegmentName)):
            continue
        seq += ref.discontinuity
        segments.append(Segment(msn=key.name.msn, duration_s=ref.duration_s, key=ref.key,
                                start_pts_s=at,
                                program_date_time=pdts[index] or (
                                    EPOCH + timedelta(seconds=at)),
                                discontinuity=ref.discontinuity, discontinuity_seq=seq,
                                init_key=ref.init_key))
        at += ref.duration_s
    return segments


def rebase_media_key(key: str, vod_id: str, broadcast_id: str) -> str:
    """A clip's playlist names the source's media relative to its own directory
    (``broadcasts/{clip_id}/...``): the same key in the source's (identity for a VOD)."""
    parsed = layout.parse_key(key)
    if vod_id == broadcast_id or not isinstance(parsed, layout.RenditionKey) \
            or parsed.broadcast_id != vod_id:
        return key
    return str(layout.RenditionKey(broadcast_id, parsed.rendition, parsed.name))


def require_object(storage: Storage, key: str) -> bytes:
    data = storage.get(key)
    if data is None:
        raise NotReady(f"{key} is not in storage")
    return data


async def read_rendition(ctx: ArchiveContext, broadcast_id: str,
                         choose: Callable[[Sequence[Rendition]], Rendition | None],
                         *, vod_id: str | None = None) -> tuple[str, list[MediaRef]]:
    """The segments of one rendition of the stored VOD (``vod_id``: a clip's, whose
    playlists are its own and whose media is ``broadcast_id``'s): the one ``choose``
    picks among those its master playlist lists (the first listed where the ladder is
    not known). Returns the rendition's name and its segments in playlist order."""
    names, renditions = await _stored_renditions(ctx, broadcast_id, vod_id)
    chosen = choose(renditions)
    name = chosen.name if chosen is not None else names[0]
    return name, await _rendition_refs(ctx, broadcast_id, vod_id, name)


async def read_main_audio(ctx: ArchiveContext, broadcast_id: str, *,
                          vod_id: str | None = None) -> list[MediaRef]:
    """The segments of the broadcast's own audio rendition (track 0) where its audio is
    in renditions of its own (its variants are then video only, castway.hls.playlist);
    [] where its variants carry their audio."""
    _, renditions = await _stored_renditions(ctx, broadcast_id, vod_id)
    main = next((r for r in renditions if r.alternate_audio and r.track == 0), None)
    return [] if main is None else await _rendition_refs(ctx, broadcast_id, vod_id, main.name)


async def _stored_renditions(ctx: ArchiveContext, broadcast_id: str, vod_id: str | None
                             ) -> tuple[list[str], list[Rendition]]:
    """The names the stored master lists, and those of them the ladder knows."""
    playlists_of = vod_id or broadcast_id
    master = await asyncio.to_thread(ctx.storage.get, layout.master_key(playlists_of))
    if master is None:
        raise NotReady(f"VOD {playlists_of} has no playlists yet")
    names = master_rendition_names(playlists_of, master.decode())
    broadcast = await find_broadcast(ctx, broadcast_id)
    renditions = [r for r in (broadcast.renditions if broadcast else ()) if r.name in names]
    return names, renditions


async def _rendition_refs(ctx: ArchiveContext, broadcast_id: str, vod_id: str | None,
                          name: str) -> list[MediaRef]:
    playlists_of = vod_id or broadcast_id
    playlist_key = layout.media_playlist_key(playlists_of, name)
    text = await asyncio.to_thread(require_object, ctx.storage, playlist_key)
    refs = parse_media_playlist(playlist_key, text.decode())
    if playlists_of != broadcast_id:
        refs = [MediaRef(rebase_media_key(r.key, playlists_of, broadcast_id),
                         None if r.init_key is None else
                         rebase_media_key(r.init_key, playlists_of, broadcast_id),
                         r.duration_s, r.discontinuity) for r in refs]
    return refs
