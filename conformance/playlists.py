"""Playlists as the checker sees them: parsed with the ``m3u8`` package (the values), then
walked line by line so that every value remembers the line it came from.

Pure: text and its URL in, frozen dataclasses out; fetching is ``follow``'s business.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urljoin

import m3u8

from conformance.findings import Line


class PlaylistError(Exception):
    """The text is not an HLS playlist at all (no #EXTM3U, or m3u8 cannot read it)."""


@dataclass(frozen=True, slots=True)
class Variant:
    """One EXT-X-STREAM-INF of a Multivariant Playlist."""

    uri: str  # absolute
    bandwidth: int | None
    average_bandwidth: int | None
    codecs: str | None
    resolution: tuple[int, int] | None
    line: Line  # the EXT-X-STREAM-INF line


@dataclass(frozen=True, slots=True)
class MasterPlaylist:
    url: str
    variants: tuple[Variant, ...]


@dataclass(frozen=True, slots=True)
class Part:
    uri: str  # absolute
    duration: float
    independent: bool
    line: Line


@dataclass(frozen=True, slots=True)
class Segment:
    msn: int
    uri: str  # absolute
    duration: float
    discontinuity: bool
    program_date_time: datetime | None
    init_uri: str | None  # absolute EXT-X-MAP URI, if any
    parts: tuple[Part, ...]
    extinf: Line
    pdt_line: Line | None
    discontinuity_line: Line | None = None


@dataclass(frozen=True, slots=True)
class Tag:
    """A header tag's value and line; ``value`` is the text after the colon."""

    value: str
    line: Line


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    url: str
    target_duration: int | None
    media_sequence: int
    discontinuity_sequence: int
    segments: tuple[Segment, ...]
    live_parts: tuple[Part, ...]  # parts of the segment still in progress
    tags: dict[str, Tag]  # header tags by name (#EXT-X-TARGETDURATION, ...)
    server_control: dict[str, str]
    part_target: float | None
    preload_hints: tuple[Line, ...]
    rendition_reports: tuple[Line, ...]
    ended: bool
    playlist_type: str | None
    independent_segments: bool
    last_line: Line

    @property
    def is_low_latency(self) -> bool:
        return self.part_target is not None

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)

    def tag_line(self, name: str) -> tuple[Line, ...]:
        tag = self.tags.get(name)
        return (tag.line,) if tag else ()


_HEADER_TAGS = ("#EXT-X-TARGETDURATION", "#EXT-X-MEDIA-SEQUENCE",
                "#EXT-X-DISCONTINUITY-SEQUENCE", "#EXT-X-SERVER-CONTROL", "#EXT-X-PART-INF",
                "#EXT-X-PLAYLIST-TYPE", "#EXT-X-ENDLIST", "#EXT-X-INDEPENDENT-SEGMENTS",
                "#EXT-X-VERSION")


def _numbered(url: str, text: str) -> list[Line]:
    lines = [Line(url, n, raw.strip()) for n, raw in enumerate(text.splitlines(), start=1)]
    if not lines or lines[0].text != "#EXTM3U":
        raise PlaylistError(f"{url}: not an HLS playlist (the first line is not #EXTM3U)")
    return lines


def _load(url: str, text: str) -> Any:
    try:
        return m3u8.loads(text, uri=url)
    except Exception as e:  # m3u8 raises bare ValueError/AttributeError on junk
        raise PlaylistError(f"{url}: m3u8 cannot parse it: {e}") from e


def is_master(text: str) -> bool:
    return "#EXT-X-STREAM-INF" in text


def parse_master(url: str, text: str) -> MasterPlaylist:
    lines = _numbered(url, text)
    parsed = _load(url, text)
    inf_lines = [ln for ln in lines if ln.text.startswith("#EXT-X-STREAM-INF")]
    variants = []
    for playlist, line in zip(parsed.playlists, inf_lines, strict=False):
        info = playlist.stream_info
        resolution = (int(info.resolution[0]), int(info.resolution[1])) \
            if info.resolution else None
        variants.append(Variant(
            uri=urljoin(url, playlist.uri), bandwidth=info.bandwidth,
            average_bandwidth=info.average_bandwidth, codecs=info.codecs,
            resolution=resolution, line=line))
    return MasterPlaylist(url, tuple(variants))


def parse_media(url: str, text: str) -> MediaPlaylist:
    lines = _numbered(url, text)
    parsed = _load(url, text)
    tags: dict[str, Tag] = {}
    hints: list[Line] = []
    reports: list[Line] = []
    # The walk: the tags of one segment sit between the previous URI line and its own.
    extinfs: list[Line] = []
    pdts: list[Line | None] = []
    breaks: list[Line | None] = []
    part_lines: list[list[Line]] = [[]]
    pending_pdt: Line | None = None
    pending_break: Line | None = None
    for line in lines[1:]:
        name = line.text.split(":", 1)[0]
        if name in _HEADER_TAGS:
            tags.setdefault(name, Tag(line.text.partition(":")[2], line))
        elif name == "#EXT-X-PRELOAD-HINT":
            hints.append(line)
        elif name == "#EXT-X-RENDITION-REPORT":
            reports.append(line)
        elif name == "#EXT-X-PROGRAM-DATE-TIME":
            pending_pdt = line
        elif name == "#EXT-X-DISCONTINUITY":
            pending_break = line
        elif name == "#EXT-X-PART":
            part_lines[-1].append(line)
        elif name == "#EXTINF":
            extinfs.append(line)
        elif line.text and not line.text.startswith("#") and len(extinfs) > len(pdts):
            pdts.append(pending_pdt)
            breaks.append(pending_break)
            pending_pdt = pending_break = None
            part_lines.append([])

    sequence = int(parsed.media_sequence or 0)
    segments: list[Segment] = []
    live_parts: tuple[Part, ...] = ()
    for index, seg in enumerate(parsed.segments):
        plines = part_lines[index] if index < len(part_lines) else []
        parts = tuple(Part(urljoin(url, p.uri), float(p.duration), p.independent == "YES",
                           line)
                      for p, line in zip(seg.parts, plines, strict=False))
        if seg.uri is None:  # m3u8 keeps the parts after the last segment as a segment
            live_parts = parts
            continue
        init = seg.init_section.uri if seg.init_section is not None else None
        segments.append(Segment(
            msn=sequence + index, uri=urljoin(url, seg.uri), duration=float(seg.duration),
            discontinuity=bool(seg.discontinuity), program_date_time=seg.program_date_time,
            init_uri=urljoin(url, init) if init else None, parts=parts,
            extinf=extinfs[index], pdt_line=pdts[index] if index < len(pdts) else None,
            discontinuity_line=breaks[index] if index < len(breaks) else None))

    # m3u8 leaves an empty dict, not None, where the tag is absent.
    control = parsed.server_control
    server_control = {k.upper().replace("_", "-"): str(v) for k, v in vars(control).items()
                      if v is not None} if hasattr(control, "__dict__") else {}
    part_target_value = getattr(parsed.part_inf, "part_target", None)
    part_target = float(part_target_value) if part_target_value is not None else None
    return MediaPlaylist(
        url=url, target_duration=parsed.target_duration, media_sequence=sequence,
        discontinuity_sequence=int(parsed.discontinuity_sequence or 0),
        segments=tuple(segments), live_parts=live_parts, tags=tags,
        server_control=server_control, part_target=part_target, preload_hints=tuple(hints),
        rendition_reports=tuple(reports), ended=bool(parsed.is_endlist),
        playlist_type=(parsed.playlist_type or None) and str(parsed.playlist_type).upper(),
        independent_segments=bool(parsed.is_independent_segments), last_line=lines[-1])
