"""Playlists as the checks read them: text in, frozen dataclasses out, every value with
the line it came from.

Sans-IO and single-pass: one walk over the lines gathers the values and, as
:data:`Rule.SYNTAX` (and :data:`Rule.VERSION`) findings in ``syntax``, what breaks the
format itself (rfc8216bis 4.1-4.4): a tag twice, a tag after the first segment, a URI
without its EXTINF, an attribute that is not of its type. ``url`` resolves relative URIs
(and names the playlist in every :class:`Line`); without one URIs stay as written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urljoin

from castway.hls.findings import Finding, Line, Rule, Severity

_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"\r\n]*"|[^,]*)')
_SEGMENT_TAGS = {"#EXTINF", "#EXT-X-BYTERANGE", "#EXT-X-DISCONTINUITY", "#EXT-X-KEY",
                 "#EXT-X-MAP", "#EXT-X-PROGRAM-DATE-TIME", "#EXT-X-GAP", "#EXT-X-BITRATE",
                 "#EXT-X-PART", "#EXT-X-DATERANGE"}
_MEDIA_PLAYLIST_TAGS = {"#EXT-X-TARGETDURATION", "#EXT-X-MEDIA-SEQUENCE",
                        "#EXT-X-DISCONTINUITY-SEQUENCE", "#EXT-X-ENDLIST",
                        "#EXT-X-PLAYLIST-TYPE", "#EXT-X-I-FRAMES-ONLY", "#EXT-X-PART-INF",
                        "#EXT-X-SERVER-CONTROL", "#EXT-X-SKIP", "#EXT-X-PRELOAD-HINT",
                        "#EXT-X-RENDITION-REPORT"}
_MASTER_TAGS = {"#EXT-X-STREAM-INF", "#EXT-X-MEDIA", "#EXT-X-I-FRAME-STREAM-INF",
                "#EXT-X-SESSION-DATA", "#EXT-X-SESSION-KEY", "#EXT-X-CONTENT-STEERING"}
# rfc8216bis 4.4.3, 4.4.2: at most once in a playlist.
_ONCE = {"#EXT-X-VERSION", "#EXT-X-TARGETDURATION", "#EXT-X-MEDIA-SEQUENCE",
         "#EXT-X-DISCONTINUITY-SEQUENCE", "#EXT-X-PLAYLIST-TYPE", "#EXT-X-PART-INF",
         "#EXT-X-SERVER-CONTROL", "#EXT-X-ENDLIST", "#EXT-X-SKIP",
         "#EXT-X-INDEPENDENT-SEGMENTS"}
# rfc8216bis 4.4.3.2, 4.4.3.3, 4.4.5.2: these come before the first segment.
_BEFORE_SEGMENTS = {"#EXT-X-MEDIA-SEQUENCE", "#EXT-X-DISCONTINUITY-SEQUENCE", "#EXT-X-SKIP"}


@dataclass(frozen=True, slots=True)
class Part:
    uri: str
    duration: float
    independent: bool
    line: Line


@dataclass(frozen=True, slots=True)
class Segment:
    msn: int
    uri: str
    duration: float
    discontinuity: bool
    discontinuity_seq: int  # the absolute discontinuity sequence number of this segment
    program_date_time: datetime | None
    init_uri: str | None  # the EXT-X-MAP in force
    parts: tuple[Part, ...]
    extinf: Line
    pdt_line: Line | None = None
    discontinuity_line: Line | None = None
    decimal_extinf: bool = False


@dataclass(frozen=True, slots=True)
class Tag:
    """A playlist-level tag's value (the text after the colon) and its first line."""

    value: str
    line: Line


@dataclass(frozen=True, slots=True)
class Hint:
    type: str
    uri: str
    line: Line


@dataclass(frozen=True, slots=True)
class Report:
    attributes: Mapping[str, str]
    line: Line


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    url: str
    version: int
    target_duration: int | None
    part_target: float | None
    server_control: Mapping[str, str]
    media_sequence: int
    discontinuity_sequence: int
    skipped: int
    segments: tuple[Segment, ...]
    live_parts: tuple[Part, ...]  # of the segment in progress
    tags: Mapping[str, Tag]
    preload_hints: tuple[Hint, ...]
    rendition_reports: tuple[Report, ...]
    ended: bool
    playlist_type: str | None
    independent_segments: bool
    last_line: Line
    syntax: tuple[Finding, ...] = ()

    @property
    def is_low_latency(self) -> bool:
        return self.part_target is not None

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)

    @property
    def end_msn(self) -> int:
        """The media sequence number after the last segment listed (or skipped)."""
        return self.media_sequence + self.skipped + len(self.segments)

    def tag_line(self, name: str) -> tuple[Line, ...]:
        tag = self.tags.get(name)
        return (tag.line,) if tag else ()


@dataclass(frozen=True, slots=True)
class Variant:
    """One EXT-X-STREAM-INF of a Multivariant Playlist."""

    uri: str
    bandwidth: int | None
    average_bandwidth: int | None
    codecs: str | None
    resolution: tuple[int, int] | None
    frame_rate: str | None
    line: Line  # the EXT-X-STREAM-INF line


@dataclass(frozen=True, slots=True)
class AudioRendition:
    """One EXT-X-MEDIA TYPE=AUDIO with a URI: an alternative audio rendition."""

    uri: str
    group_id: str
    name: str
    line: Line


@dataclass(frozen=True, slots=True)
class MultivariantPlaylist:
    url: str
    variants: tuple[Variant, ...]
    syntax: tuple[Finding, ...] = ()
    audio: tuple[AudioRendition, ...] = ()


def attributes(text: str) -> dict[str, str]:
    """An attribute-list (rfc8216bis 4.2), quoted values unquoted."""
    return {m.group(1): m.group(2).strip('"') for m in _ATTR.finditer(text)}


def raw_attributes(text: str) -> dict[str, str]:
    """An attribute-list, quoted values with their quotes (to check which are quoted)."""
    return {m.group(1): m.group(2) for m in _ATTR.finditer(text)}


def is_playlist(text: str) -> bool:
    """rfc8216bis 4.4.1.1: every playlist starts with #EXTM3U."""
    return text.lstrip("\ufeff").split("\n", 1)[0].strip() == "#EXTM3U"


def is_multivariant(text: str) -> bool:
    return any(line.split(":", 1)[0].strip() in _MASTER_TAGS for line in text.splitlines())


def mixes_kinds(text: str) -> bool:
    """rfc8216bis 4.1: a playlist is a Media or a Multivariant Playlist, not both."""
    tags = {ln.split(":", 1)[0].strip() for ln in text.splitlines() if ln.startswith("#EXT")}
    return bool(tags & _MASTER_TAGS) and bool(tags & (_SEGMENT_TAGS | _MEDIA_PLAYLIST_TAGS))


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _date(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _uri(base: str, uri: str) -> str:
    return urljoin(base, uri) if base else uri


def _resolution(value: str | None) -> tuple[int, int] | None:
    match = re.fullmatch(r"(\d+)x(\d+)", value or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass
class _MediaWalk:
    """The state of one walk over a Media Playlist's lines."""

    url: str
    syntax: list[Finding] = field(default_factory=list)
    tags: dict[str, Tag] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    part_uris: set[str] = field(default_factory=set)
    hints: list[Hint] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)
    extinf: tuple[float, Line, bool] | None = None
    pdt: tuple[datetime | None, Line] | None = None
    discontinuity: Line | None = None
    media_sequence: int = 0
    discontinuity_sequence: int = 0
    skipped: int = 0
    discontinuities: int = 0
    current_map: str | None = None
    part_target: float | None = None
    first_segment_line: int | None = None
    ended_at: int | None = None

    def bad(self, line: Line | None, message: str, rule: Rule = Rule.SYNTAX) -> None:
        self.syntax.append(Finding(rule, Severity.VIOLATION, self.url, message,
                                   (line,) if line else (), key=f"{rule}:{message}"))

    def uri(self, line: Line) -> None:
        if self.ended_at is not None:
            self.bad(line, "a URI after EXT-X-ENDLIST")
        if self.extinf is None:
            self.bad(line, "a URI without EXTINF")
            return
        duration, extinf_line, decimal = self.extinf
        if self.discontinuity is not None:
            self.discontinuities += 1
        pdt, pdt_line = self.pdt if self.pdt is not None else (None, None)
        self.segments.append(Segment(
            self.media_sequence + self.skipped + len(self.segments),
            _uri(self.url, line.text), duration, self.discontinuity is not None,
            self.discontinuity_sequence + self.discontinuities, pdt,
            _uri(self.url, self.current_map) if self.current_map else None,
            tuple(self.parts), extinf_line, pdt_line, self.discontinuity, decimal))
        self.parts, self.extinf, self.pdt, self.discontinuity = [], None, None, None

    def tag(self, name: str, value: str, line: Line) -> None:
        if name in _SEGMENT_TAGS and self.first_segment_line is None:
            self.first_segment_line = line.number
        if name in _ONCE:
            if name in self.tags:
                self.bad(line, f"{name} appears twice (at most once)")
            else:
                self.tags[name] = Tag(value, line)
        if name in _BEFORE_SEGMENTS and self.first_segment_line is not None:
            self.bad(line, f"{name} after the first segment")
        if name in ("#EXT-X-MEDIA-SEQUENCE", "#EXT-X-DISCONTINUITY-SEQUENCE"):
            if not value.isdigit():
                self.bad(line, f"{name} is not a decimal integer")
            elif name == "#EXT-X-MEDIA-SEQUENCE":
                self.media_sequence = int(value)
            else:
                self.discontinuity_sequence = int(value)
        elif name == "#EXT-X-SKIP":
            count = attributes(value).get("SKIPPED-SEGMENTS", "")
            if not count.isdigit():
                self.bad(line, "EXT-X-SKIP without SKIPPED-SEGMENTS")
            self.skipped = int(count) if count.isdigit() else 0
        elif name == "#EXT-X-PLAYLIST-TYPE" and value not in ("EVENT", "VOD"):
            self.bad(line, "EXT-X-PLAYLIST-TYPE is neither EVENT nor VOD")
        elif name == "#EXT-X-PART-INF":
            self.part_target = _float(attributes(value).get("PART-TARGET"))
            if self.part_target is None:
                self.bad(line, "EXT-X-PART-INF without PART-TARGET")
        elif name == "#EXTINF":
            text = value.split(",", 1)[0]
            duration = _float(text)
            if duration is None or duration < 0:
                self.bad(line, "EXTINF duration is not a non-negative number")
            if self.extinf is not None:
                self.bad(line, "EXTINF follows EXTINF without a URI")
            self.extinf = (duration if duration is not None and duration >= 0 else 0.0,
                           line, "." in text)
        elif name == "#EXT-X-DISCONTINUITY":
            self.discontinuity = line
        elif name == "#EXT-X-MAP":
            self.current_map = attributes(value).get("URI")
            if self.current_map is None:
                self.bad(line, "EXT-X-MAP without URI")
        elif name == "#EXT-X-PROGRAM-DATE-TIME":
            when = _date(value)
            if when is None or when.tzinfo is None:
                self.bad(line, "EXT-X-PROGRAM-DATE-TIME is not ISO 8601 with an offset")
            self.pdt = (when, line)
        elif name == "#EXT-X-PART":
            self.part(value, line)
        elif name == "#EXT-X-PRELOAD-HINT":
            attrs = attributes(value)
            if attrs.get("TYPE") not in ("PART", "MAP") or "URI" not in attrs:
                self.bad(line, "EXT-X-PRELOAD-HINT needs TYPE=PART|MAP and URI",
                         Rule.PRELOAD_HINT)
            elif any(h.type == attrs["TYPE"] for h in self.hints):
                self.bad(line, "two EXT-X-PRELOAD-HINT of one TYPE", Rule.PRELOAD_HINT)
            self.hints.append(Hint(attrs.get("TYPE", ""), attrs.get("URI", ""), line))
        elif name == "#EXT-X-RENDITION-REPORT":
            self.reports.append(Report(attributes(value), line))
        elif name == "#EXT-X-ENDLIST":
            self.ended_at = line.number

    def part(self, value: str, line: Line) -> None:
        attrs = attributes(value)
        duration = _float(attrs.get("DURATION"))
        if duration is None or "URI" not in attrs:
            self.bad(line, "EXT-X-PART needs DURATION and URI")
            return
        if attrs["URI"] in self.part_uris:
            self.bad(line, f"EXT-X-PART URI {attrs['URI']} listed twice")
        if self.part_target is None:
            self.bad(line, "EXT-X-PART without EXT-X-PART-INF before it")
        self.part_uris.add(attrs["URI"])
        self.parts.append(Part(_uri(self.url, attrs["URI"]), duration,
                               attrs.get("INDEPENDENT") == "YES", line))


def parse_media(text: str, url: str = "") -> MediaPlaylist:
    """A Media Playlist; what cannot be read is a :data:`Rule.SYNTAX` finding in it."""
    walk = _MediaWalk(url)
    lines = [Line(url, n, raw.strip()) for n, raw in enumerate(text.splitlines(), start=1)]
    if not lines or lines[0].text.lstrip("\ufeff") != "#EXTM3U":
        walk.bad(lines[0] if lines else None, "the first line is not #EXTM3U")
    for line in lines[1:]:
        if not line.text:
            continue
        if line.text.startswith("#"):
            name, _, value = line.text.partition(":")
            walk.tag(name, value, line)
        else:
            walk.uri(line)
    if walk.extinf is not None:
        walk.bad(walk.extinf[1], "EXTINF without a URI")
    values = {name: tag.value for name, tag in walk.tags.items()}
    target_text = values.get("#EXT-X-TARGETDURATION")
    target = int(target_text) if target_text is not None and target_text.isdigit() else None
    if target_text is None:
        walk.bad(None, "EXT-X-TARGETDURATION is missing")
    elif target is None:
        walk.bad(walk.tags["#EXT-X-TARGETDURATION"].line,
                 "EXT-X-TARGETDURATION is not an integer")
    version_text = values.get("#EXT-X-VERSION", "1")
    playlist_type = values.get("#EXT-X-PLAYLIST-TYPE")
    return MediaPlaylist(
        url=url, version=int(version_text) if version_text.isdigit() else 0,
        target_duration=target, part_target=walk.part_target,
        server_control=attributes(values.get("#EXT-X-SERVER-CONTROL", "")),
        media_sequence=walk.media_sequence,
        discontinuity_sequence=walk.discontinuity_sequence, skipped=walk.skipped,
        segments=tuple(walk.segments), live_parts=tuple(walk.parts), tags=walk.tags,
        preload_hints=tuple(walk.hints), rendition_reports=tuple(walk.reports),
        ended=walk.ended_at is not None,
        playlist_type=playlist_type.upper() if playlist_type else None,
        independent_segments="#EXT-X-INDEPENDENT-SEGMENTS" in walk.tags,
        last_line=lines[-1] if lines else Line(url, 1, ""), syntax=tuple(walk.syntax))


def parse_multivariant(text: str, url: str = "") -> MultivariantPlaylist:
    """A Multivariant Playlist; each EXT-X-STREAM-INF with the URI line after it."""
    syntax: list[Finding] = []
    variants: list[Variant] = []
    audio: list[AudioRendition] = []
    pending: Line | None = None

    def bad(line: Line | None, message: str) -> None:
        syntax.append(Finding(Rule.SYNTAX, Severity.VIOLATION, url, message,
                              (line,) if line else (), key=message))

    lines = [Line(url, n, raw.strip()) for n, raw in enumerate(text.splitlines(), start=1)]
    if not lines or lines[0].text.lstrip("\ufeff") != "#EXTM3U":
        bad(lines[0] if lines else None, "the first line is not #EXTM3U")
    for line in lines[1:]:
        if line.text.startswith("#EXT-X-STREAM-INF:"):
            if pending is not None:
                bad(pending, "EXT-X-STREAM-INF without a URI")
            pending = line
            _attribute_types(line, bad)
        elif line.text.startswith("#EXT-X-MEDIA:"):
            attrs = attributes(line.text.split(":", 1)[1])
            if attrs.get("TYPE") == "AUDIO" and "URI" in attrs:
                audio.append(AudioRendition(_uri(url, attrs["URI"]), attrs.get("GROUP-ID", ""),
                                            attrs.get("NAME", ""), line))
        elif line.text and not line.text.startswith("#"):
            if pending is None:
                bad(line, "a URI without EXT-X-STREAM-INF")
                continue
            attrs = attributes(pending.text.split(":", 1)[1])
            bandwidth, average = attrs.get("BANDWIDTH", ""), attrs.get("AVERAGE-BANDWIDTH")
            variants.append(Variant(
                _uri(url, line.text), int(bandwidth) if bandwidth.isdigit() else None,
                int(average) if average is not None and average.isdigit() else None,
                attrs.get("CODECS"), _resolution(attrs.get("RESOLUTION")),
                attrs.get("FRAME-RATE"), pending))
            pending = None
    if pending is not None:
        bad(pending, "EXT-X-STREAM-INF without a URI")
    return MultivariantPlaylist(url, tuple(variants), tuple(syntax), tuple(audio))


def _attribute_types(line: Line, bad: Callable[[Line | None, str], None]) -> None:
    """rfc8216bis 4.2, 4.4.6.2: each EXT-X-STREAM-INF attribute of its type."""
    attrs = raw_attributes(line.text.split(":", 1)[1])
    for name in ("BANDWIDTH", "AVERAGE-BANDWIDTH"):
        if name in attrs and not attrs[name].isdigit():
            bad(line, f"{name} is not a decimal integer")
    if "RESOLUTION" in attrs and _resolution(attrs["RESOLUTION"]) is None:
        bad(line, "RESOLUTION is not WIDTHxHEIGHT")
    if "FRAME-RATE" in attrs and not re.fullmatch(r"\d+(\.\d{1,3})?", attrs["FRAME-RATE"]):
        bad(line, "FRAME-RATE has more than 3 decimals")
    if "CODECS" in attrs and not attrs["CODECS"].startswith('"'):
        bad(line, "CODECS is not a quoted-string")
