"""Instant VOD: playlists over the segments already in storage (:func:`plan_vod`), a
multivariant playlist (RFC 8216bis 4.4.6) and EXT-X-PLAYLIST-TYPE:VOD media playlists
(4.4.3.5). Pure and synchronous.

Design: docs/archiver.md, "Instant VOD".
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from castway.hls.playlist import PlaylistType, render_master_playlist, render_media_playlist
from castway.layout import master_key, media_playlist_key
from castway.live.base import RenditionWindow, playlist_segments
from castway.model import Rendition, Segment

logger = logging.getLogger(__name__)


# -- URIs ---------------------------------------------------------------------------------------

def relative_uri(from_key: str, to_key: str) -> str:
    """The URI of object ``to_key`` relative to the playlist at ``from_key`` (RFC 3986
    5.2: resolved against the playlist's URI, so it works under any origin or CDN path)."""
    base = posixpath.dirname(from_key)
    if base and to_key.startswith(base + "/"):
        return to_key[len(base) + 1:]  # the common case, without relpath's cost per segment
    return posixpath.relpath(to_key, base or ".")


# -- building -------------------------------------------------------------------------------

def normalize_log(log: Iterable[Segment]) -> list[Segment]:
    """The segment log in media-sequence order, one entry per media sequence number.

    A sink restarted mid-segment may append a segment again (the upload is idempotent);
    the last entry for a number wins.
    """
    segments = list(log)
    if all(a.msn < b.msn for a, b in zip(segments, segments[1:], strict=False)):
        return segments  # the usual case: already in order, no repeats
    by_msn: dict[int, Segment] = {}
    for segment in segments:
        by_msn[segment.msn] = segment
    return [by_msn[msn] for msn in sorted(by_msn)]


def vod_window(log: Sequence[Segment], *, target_duration_s: float) -> RenditionWindow:
    """A closed (``ended``) window over every segment of ``log``.

    EXT-X-DISCONTINUITY-SEQUENCE is that of the first segment; a discontinuity flag on the
    first segment itself means nothing in a playlist that starts there, so it is dropped.
    """
    segments = normalize_log(log)
    if not segments:
        return RenditionWindow(segments=(), next_msn=0, target_duration_s=target_duration_s,
                               ended=True)
    kept, discontinuity_seq = playlist_segments(segments)
    return RenditionWindow(segments=kept, next_msn=kept[-1].msn + 1,
                           target_duration_s=target_duration_s,
                           discontinuity_seq=discontinuity_seq, ended=True)


def uri_resolver(playlist_key: str) -> Callable[[str], str]:
    """``relative_uri`` from one playlist, with the directory prefix computed once (a 24 h
    rendition has 43 200 segments)."""
    base = posixpath.dirname(playlist_key)
    prefix = base + "/"
    cut = len(prefix)

    def uri(key: str) -> str:
        return key[cut:] if key.startswith(prefix) else relative_uri(playlist_key, key)

    return uri


def render_vod_media_playlist(broadcast_id: str, rendition: str, log: Sequence[Segment], *,
                              target_duration_s: float) -> str:
    return render_media_playlist(vod_window(log, target_duration_s=target_duration_s),
                                 uri_for_key=uri_resolver(
                                     media_playlist_key(broadcast_id, rendition)),
                                 playlist_type=PlaylistType.VOD)


def render_vod_master_playlist(broadcast_id: str, renditions: Sequence[Rendition]) -> str:
    key = master_key(broadcast_id)
    # The first variant; an alternative audio rendition is no variant (castway.hls.playlist).
    first = next((r.name for r in renditions if not r.alternate_audio), None)
    return render_master_playlist(
        renditions, first=first,
        uri_for=lambda r: relative_uri(key, media_playlist_key(broadcast_id, r.name)))


@dataclass(frozen=True, slots=True)
class VodPlan:
    """Everything one VOD is: its playlists (key -> text), master last."""

    broadcast_id: str
    playlists: tuple[tuple[str, str], ...]  # master last: it goes up once the rest exist
    renditions: tuple[str, ...]
    duration_s: float
    segments: int

    @property
    def empty(self) -> bool:
        return self.segments == 0


def plan_vod(broadcast_id: str, renditions: Sequence[Rendition],
             logs: Mapping[str, Sequence[Segment]], *, target_duration_s: float) -> VodPlan:
    """The VOD of a broadcast from its renditions and their segment logs.

    Renditions with an empty log are left out of the master playlist (a rendition that
    never produced a segment would be unplayable); a log of a rendition the broadcast does
    not list is ignored. The duration is the longest rendition's.
    """
    playlists: list[tuple[str, str]] = []
    listed: list[Rendition] = []
    duration = 0.0
    count = 0
    for rendition in renditions:
        log = normalize_log(logs.get(rendition.name, ()))
        if not log:
            logger.warning("rendition without segments left out of the VOD",
                           extra={"broadcast_id": broadcast_id, "rendition": rendition.name})
            continue
        listed.append(rendition)
        playlists.append((media_playlist_key(broadcast_id, rendition.name),
                          render_vod_media_playlist(broadcast_id, rendition.name, log,
                                                    target_duration_s=target_duration_s)))
        duration = max(duration, sum(s.duration_s for s in log))
        count += len(log)
    if listed:
        playlists.append((master_key(broadcast_id),
                          render_vod_master_playlist(broadcast_id, listed)))
    return VodPlan(broadcast_id=broadcast_id, playlists=tuple(playlists),
                   renditions=tuple(r.name for r in listed), duration_s=duration,
                   segments=count)


def source_rendition(renditions: Sequence[Rendition]) -> Rendition | None:
    """The rendition an MP4 export remuxes: the one named "source", else the largest."""
    for rendition in renditions:
        if rendition.name == "source":
            return rendition
    if not renditions:
        return None
    return max(renditions, key=lambda r: ((r.width or 0) * (r.height or 0),
                                          r.bandwidth_bps or r.video_bitrate_kbps or 0))


def smallest_rendition(renditions: Sequence[Rendition]) -> Rendition | None:
    """The rendition thumbnails decode (the cheapest that still has video)."""
    video = [r for r in renditions if r.width and r.height]
    pool = video or list(renditions)
    if not pool:
        return None
    return min(pool, key=lambda r: ((r.width or 0) * (r.height or 0), r.name))
