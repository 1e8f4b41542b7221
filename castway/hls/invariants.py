"""The invariants of castway's live playlists, checked on what a player reads.

Sans-IO: playlist text in (:func:`parse_media` / :func:`parse_multivariant`), typed
findings out, each naming the rule, the spec behind it and the offending line. Four
scopes, as a player meets them:

- one revision of a Media Playlist (:func:`check_media`): EXTINF rounded <= TARGETDURATION
  (rfc8216bis 4.4.3.1), parts within PART-TARGET and summing to their segment (4.4.4.9),
  HOLD-BACK >= 3 target durations, PART-HOLD-BACK >= 3 part targets (castway's choice of
  the SHOULD in 4.4.3.8), CAN-SKIP-UNTIL >= 6 target durations, PROGRAM-DATE-TIME
  monotonic (4.4.4.6), the preload hint not an existing part, rendition reports well
  formed (4.4.5.4);
- a reload against the previous revision of the same rendition
  (:func:`check_media_update`): TARGETDURATION, PART-TARGET and EXT-X-SERVER-CONTROL fixed
  (6.2.1), MEDIA-SEQUENCE never back, a media sequence number keeps its URI, duration,
  discontinuity sequence and date (6.2.1, 6.2.2), no segment removed below three target
  durations (6.2.2), an ended playlist stays ended;
- the renditions of one broadcast side by side (:func:`check_renditions`): the same
  TARGETDURATION, PART-TARGET and server control everywhere, and a media sequence number
  in one rendition has the discontinuity sequence it has in the others (6.2.2: variants
  aligned);
- the Multivariant Playlist (:func:`check_multivariant`, :func:`check_multivariant_update`):
  every variant with BANDWIDTH and CODECS (4.4.6.2), the variant set and what each variant
  declares (CODECS, RESOLUTION, FRAME-RATE) unchanged while live; and, given what was
  measured, BANDWIDTH against the peak segment bit rate (:func:`check_bandwidth`,
  :func:`peak_segment_bitrate`) and EXTINF against the media's own duration
  (:func:`check_durations`).

:class:`BroadcastWatch` keeps the previous revisions and runs every scope on each new one:
what the tests run on every revision a real broadcast produces, and what an HTTP checker
(``castway check``) feeds with what it fetches.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

# rfc8216bis 4.4.3.8 (HOLD-BACK MUST), castway's PART-HOLD-BACK (the SHOULD), CAN-SKIP-UNTIL.
HOLD_BACK_TARGET_DURATIONS = 3.0
PART_HOLD_BACK_PART_TARGETS = 3.0
SKIP_UNTIL_TARGET_DURATIONS = 6.0
# rfc8216bis 6.2.2: no segment removed that leaves less than this many target durations.
MIN_WINDOW_TARGET_DURATIONS = 3.0
# rfc8216bis 4.4.6.2: the peak segment bit rate is over runs this long (target durations).
PEAK_RUN = (0.5, 1.5)
# Apple's HLS authoring spec: the measured peak may exceed BANDWIDTH by 10% at most.
BANDWIDTH_TOLERANCE = 1.10
# Parts' DURATION (5 decimals) and EXTINF (5 decimals) are rounded, media are not.
TOLERANCE_S = 0.002
# EXTINF against the media: one frame at 24 fps either way.
MEDIA_TOLERANCE_S = 0.042

_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"\r\n]*"|[^,]*)')


class Rule(StrEnum):
    """What a finding breaks, and where the rule comes from."""

    SYNTAX = "syntax"  # rfc8216bis 4.1-4.4: a tag or value castway's players cannot read
    EXTINF_OVER_TARGET = "extinf-over-target"  # 4.4.3.1
    PART_OVER_TARGET = "part-over-target"  # 4.4.4.9
    PARTS_SUM = "parts-sum"  # 4.4.4.9: a segment is its parts
    HOLD_BACK = "hold-back"  # 4.4.3.8
    PART_HOLD_BACK = "part-hold-back"  # 4.4.3.8
    SKIP_UNTIL = "skip-until"  # 4.4.3.8
    PDT_MONOTONIC = "pdt-monotonic"  # 4.4.4.6
    PRELOAD_HINT = "preload-hint"  # 4.4.5.3
    RENDITION_REPORT = "rendition-report"  # 4.4.5.4
    TARGET_FIXED = "target-duration-fixed"  # 6.2.1
    PART_TARGET_FIXED = "part-target-fixed"  # 6.2.1 (castway: fixed for the broadcast)
    SERVER_CONTROL_FIXED = "server-control-fixed"  # castway: fixed for the broadcast
    MEDIA_SEQUENCE = "media-sequence"  # 6.2.1
    SEGMENT_CHANGED = "segment-changed"  # 6.2.1
    DISCONTINUITY_SEQUENCE = "discontinuity-sequence"  # 6.2.2
    WINDOW_TOO_SHORT = "window-too-short"  # 6.2.2
    ENDLIST = "endlist"  # 6.2.1
    RENDITIONS_DIFFER = "renditions-differ"  # 6.2.2, Apple HLS authoring spec
    VARIANT_SET_CHANGED = "variant-set-changed"  # castway: fixed while live
    VARIANT_CHANGED = "variant-changed"  # castway: what a variant declares is fixed
    VARIANT_ATTRIBUTES = "variant-attributes"  # 4.4.6.2
    BANDWIDTH = "bandwidth"  # 4.4.6.2, Apple HLS authoring spec (within 10%)
    EXTINF_MEDIA = "extinf-media"  # 4.4.4.1: EXTINF is the segment's duration


@dataclass(frozen=True, slots=True)
class Finding:
    rule: Rule
    message: str
    line: int | None = None  # 1-based line number in the playlist, when one is to blame
    text: str = ""  # that line
    playlist: str = ""  # which playlist (a rendition name or URI), for the watch

    def __str__(self) -> str:
        where = f"{self.playlist}:" if self.playlist else ""
        where += f"{self.line}: " if self.line is not None else " " if where else ""
        return f"{where}[{self.rule}] {self.message}" + (f" -- {self.text}" if self.text
                                                         else "")


@dataclass(frozen=True, slots=True)
class Line:
    number: int  # 1-based
    text: str


@dataclass(frozen=True, slots=True)
class PartEntry:
    duration_s: float
    uri: str
    independent: bool
    line: Line


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    msn: int
    duration_s: float
    uri: str
    discontinuity: bool
    discontinuity_seq: int  # the absolute discontinuity sequence number of this segment
    program_date_time: datetime | None
    parts: tuple[PartEntry, ...]
    line: Line  # its EXTINF
    map_uri: str | None = None  # the EXT-X-MAP in force


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    target_duration: int | None
    part_target: float | None
    server_control: Mapping[str, str]
    media_sequence: int
    discontinuity_sequence: int
    skipped: int
    segments: tuple[SegmentEntry, ...]
    open_parts: tuple[PartEntry, ...]  # of the segment in progress
    preload_hints: tuple[tuple[str, str, Line], ...]  # (TYPE, URI, line)
    rendition_reports: tuple[tuple[Mapping[str, str], Line], ...]
    ended: bool
    tag_lines: Mapping[str, Line]  # first line of each playlist-level tag
    syntax: tuple[Finding, ...] = ()

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.segments)


@dataclass(frozen=True, slots=True)
class Variant:
    uri: str
    bandwidth: int | None
    average_bandwidth: int | None
    codecs: str | None
    resolution: str | None
    frame_rate: str | None
    line: Line  # its EXT-X-STREAM-INF


@dataclass(frozen=True, slots=True)
class MultivariantPlaylist:
    variants: tuple[Variant, ...]
    syntax: tuple[Finding, ...] = ()


def attributes(text: str) -> dict[str, str]:
    """An attribute-list (rfc8216bis 4.2), quoted values unquoted."""
    return {m.group(1): m.group(2).strip('"') for m in _ATTR.finditer(text)}


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


def parse_media(text: str) -> MediaPlaylist:
    """A Media Playlist; what cannot be read is a :data:`Rule.SYNTAX` finding in it."""
    syntax: list[Finding] = []
    tags: dict[str, Line] = {}
    values: dict[str, str] = {}
    segments: list[SegmentEntry] = []
    parts: list[PartEntry] = []
    hints: list[tuple[str, str, Line]] = []
    reports: list[tuple[Mapping[str, str], Line]] = []
    pending_extinf: tuple[float, Line] | None = None
    pending_pdt: datetime | None = None
    pending_discontinuity = False
    ended = False
    media_sequence = discontinuity_sequence = skipped = 0
    discontinuities = 0
    current_map: str | None = None

    def bad(line: Line, message: str) -> None:
        syntax.append(Finding(Rule.SYNTAX, message, line.number, line.text))

    lines = text.splitlines()
    if not lines or lines[0].strip() != "#EXTM3U":
        syntax.append(Finding(Rule.SYNTAX, "the first line is not #EXTM3U", 1,
                              lines[0] if lines else ""))
    for number, raw in enumerate(lines[1:], start=2):
        text_line = raw.strip()
        if not text_line:
            continue
        line = Line(number, text_line)
        if not text_line.startswith("#"):
            if pending_extinf is None:
                bad(line, "a URI without EXTINF")
                continue
            duration, extinf_line = pending_extinf
            msn = media_sequence + skipped + len(segments)
            if pending_discontinuity:
                discontinuities += 1
            segments.append(SegmentEntry(
                msn, duration, text_line, pending_discontinuity,
                discontinuity_sequence + discontinuities, pending_pdt, tuple(parts),
                extinf_line, current_map))
            parts, pending_extinf, pending_pdt = [], None, None
            pending_discontinuity = False
            continue
        name, _, value = text_line.partition(":")
        if name in ("#EXT-X-TARGETDURATION", "#EXT-X-MEDIA-SEQUENCE",
                    "#EXT-X-DISCONTINUITY-SEQUENCE", "#EXT-X-PART-INF",
                    "#EXT-X-SERVER-CONTROL", "#EXT-X-SKIP", "#EXT-X-VERSION"):
            if name in tags:
                bad(line, f"{name} appears twice")
            tags[name] = line
            values[name] = value
            if name in ("#EXT-X-MEDIA-SEQUENCE", "#EXT-X-DISCONTINUITY-SEQUENCE") and \
                    not value.isdigit():
                bad(line, f"{name} is not a decimal integer")
            elif name == "#EXT-X-MEDIA-SEQUENCE":
                media_sequence = int(value)
            elif name == "#EXT-X-DISCONTINUITY-SEQUENCE":
                discontinuity_sequence = int(value)
            elif name == "#EXT-X-SKIP":
                count = attributes(value).get("SKIPPED-SEGMENTS", "")
                skipped = int(count) if count.isdigit() else 0
        elif name == "#EXTINF":
            extinf = _float(value.split(",", 1)[0])
            if extinf is None or extinf < 0:
                bad(line, "EXTINF duration is not a non-negative number")
            pending_extinf = (extinf if extinf is not None and extinf >= 0 else 0.0, line)
        elif name == "#EXT-X-DISCONTINUITY":
            pending_discontinuity = True
        elif name == "#EXT-X-MAP":
            current_map = attributes(value).get("URI")
        elif name == "#EXT-X-PROGRAM-DATE-TIME":
            pending_pdt = _date(value)
            if pending_pdt is None or pending_pdt.tzinfo is None:
                bad(line, "EXT-X-PROGRAM-DATE-TIME is not ISO 8601 with an offset")
        elif name == "#EXT-X-PART":
            attrs = attributes(value)
            part_duration = _float(attrs.get("DURATION"))
            if part_duration is None or "URI" not in attrs:
                bad(line, "EXT-X-PART needs DURATION and URI")
                continue
            parts.append(PartEntry(part_duration, attrs["URI"],
                                   attrs.get("INDEPENDENT") == "YES", line))
        elif name == "#EXT-X-PRELOAD-HINT":
            attrs = attributes(value)
            hints.append((attrs.get("TYPE", ""), attrs.get("URI", ""), line))
        elif name == "#EXT-X-RENDITION-REPORT":
            reports.append((attributes(value), line))
        elif name == "#EXT-X-ENDLIST":
            ended = True
    target_text = values.get("#EXT-X-TARGETDURATION")
    target = int(target_text) if target_text is not None and target_text.isdigit() else None
    if target_text is not None and target is None:
        bad(tags["#EXT-X-TARGETDURATION"], "EXT-X-TARGETDURATION is not an integer")
    part_inf = values.get("#EXT-X-PART-INF")
    part_target = _float(attributes(part_inf).get("PART-TARGET")) if part_inf else None
    return MediaPlaylist(
        target_duration=target, part_target=part_target,
        server_control=attributes(values.get("#EXT-X-SERVER-CONTROL", "")),
        media_sequence=media_sequence, discontinuity_sequence=discontinuity_sequence,
        skipped=skipped, segments=tuple(segments), open_parts=tuple(parts),
        preload_hints=tuple(hints), rendition_reports=tuple(reports), ended=ended,
        tag_lines=tags, syntax=tuple(syntax))


def parse_multivariant(text: str) -> MultivariantPlaylist:
    syntax: list[Finding] = []
    variants: list[Variant] = []
    pending: tuple[dict[str, str], Line] | None = None
    for number, raw in enumerate(text.splitlines()[1:], start=2):
        text_line = raw.strip()
        if not text_line:
            continue
        line = Line(number, text_line)
        if text_line.startswith("#EXT-X-STREAM-INF:"):
            pending = (attributes(text_line.split(":", 1)[1]), line)
        elif not text_line.startswith("#"):
            if pending is None:
                syntax.append(Finding(Rule.SYNTAX, "a URI without EXT-X-STREAM-INF",
                                      number, text_line))
                continue
            attrs, at = pending
            bandwidth, average = attrs.get("BANDWIDTH", ""), attrs.get("AVERAGE-BANDWIDTH")
            variants.append(Variant(
                text_line, int(bandwidth) if bandwidth.isdigit() else None,
                int(average) if average is not None and average.isdigit() else None,
                attrs.get("CODECS"), attrs.get("RESOLUTION"), attrs.get("FRAME-RATE"), at))
            pending = None
    return MultivariantPlaylist(tuple(variants), tuple(syntax))


# --- one revision ---------------------------------------------------------------------


def check_media(playlist: MediaPlaylist) -> list[Finding]:
    """The rules one revision of a Media Playlist keeps on its own."""
    out = list(playlist.syntax)
    td = playlist.target_duration
    if td is None:
        out.append(Finding(Rule.SYNTAX, "EXT-X-TARGETDURATION is missing"))
        return out
    for segment in playlist.segments:
        if math.floor(segment.duration_s + 0.5) > td:
            out.append(Finding(Rule.EXTINF_OVER_TARGET,
                               f"EXTINF {segment.duration_s} rounds above "
                               f"EXT-X-TARGETDURATION {td}", segment.line.number,
                               segment.line.text))
        if segment.parts and abs(sum(p.duration_s for p in segment.parts)
                                 - segment.duration_s) > TOLERANCE_S * len(segment.parts):
            out.append(Finding(Rule.PARTS_SUM, f"parts sum to "
                               f"{sum(p.duration_s for p in segment.parts):.5f}, EXTINF is "
                               f"{segment.duration_s}", segment.line.number,
                               segment.line.text))
    pt = playlist.part_target
    all_parts = [p for s in playlist.segments for p in s.parts] + list(playlist.open_parts)
    if pt is not None:
        for part in all_parts:
            if part.duration_s > pt + 1e-9:
                out.append(Finding(Rule.PART_OVER_TARGET, f"part of {part.duration_s} s "
                                   f"over PART-TARGET {pt}", part.line.number,
                                   part.line.text))
    control = playlist.server_control
    control_line = playlist.tag_lines.get("#EXT-X-SERVER-CONTROL")
    where = (control_line.number, control_line.text) if control_line else (None, "")
    hold_back = _float(control.get("HOLD-BACK"))
    if hold_back is not None and hold_back < HOLD_BACK_TARGET_DURATIONS * td - 1e-9:
        out.append(Finding(Rule.HOLD_BACK, f"HOLD-BACK {hold_back} is under 3 x "
                           f"EXT-X-TARGETDURATION {td}", *where))
    part_hold_back = _float(control.get("PART-HOLD-BACK"))
    if pt is not None and not playlist.ended:
        if part_hold_back is None:
            out.append(Finding(Rule.PART_HOLD_BACK, "EXT-X-PART-INF without "
                               "PART-HOLD-BACK", *where))
        elif part_hold_back < PART_HOLD_BACK_PART_TARGETS * pt - 1e-9:
            out.append(Finding(Rule.PART_HOLD_BACK, f"PART-HOLD-BACK {part_hold_back} is "
                               f"under 3 x PART-TARGET {pt}", *where))
    skip_until = _float(control.get("CAN-SKIP-UNTIL"))
    if skip_until is not None and skip_until < SKIP_UNTIL_TARGET_DURATIONS * td - 1e-9:
        out.append(Finding(Rule.SKIP_UNTIL, f"CAN-SKIP-UNTIL {skip_until} is under 6 x "
                           f"EXT-X-TARGETDURATION {td}", *where))
    dated = [s for s in playlist.segments if s.program_date_time is not None]
    for earlier, later in zip(dated, dated[1:], strict=False):
        assert earlier.program_date_time is not None and later.program_date_time is not None
        if later.program_date_time < earlier.program_date_time:
            out.append(Finding(Rule.PDT_MONOTONIC, "EXT-X-PROGRAM-DATE-TIME goes back",
                               later.line.number, later.line.text))
    uris = {p.uri for p in all_parts}
    for kind, uri, line in playlist.preload_hints:
        if playlist.ended:
            out.append(Finding(Rule.PRELOAD_HINT, "a preload hint in an ended playlist",
                               line.number, line.text))
        elif kind == "PART" and uri in uris:
            out.append(Finding(Rule.PRELOAD_HINT, "the preload hint names a listed part",
                               line.number, line.text))
    for attrs, line in playlist.rendition_reports:
        if "URI" not in attrs or not attrs.get("LAST-MSN", "").isdigit() or \
                ("LAST-PART" in attrs and not attrs["LAST-PART"].isdigit()):
            out.append(Finding(Rule.RENDITION_REPORT, "needs URI and integer LAST-MSN "
                               "(and LAST-PART)", line.number, line.text))
    return out


# --- a reload -------------------------------------------------------------------------


def check_media_update(previous: MediaPlaylist, current: MediaPlaylist) -> list[Finding]:
    """The rules a reload keeps against the revision before it (same rendition)."""
    out: list[Finding] = []

    def tag(name: str) -> tuple[int | None, str]:
        line = current.tag_lines.get(name)
        return (line.number, line.text) if line else (None, "")

    if previous.target_duration != current.target_duration:
        out.append(Finding(Rule.TARGET_FIXED, f"EXT-X-TARGETDURATION went from "
                           f"{previous.target_duration} to {current.target_duration}",
                           *tag("#EXT-X-TARGETDURATION")))
    if previous.part_target != current.part_target and not current.ended:
        out.append(Finding(Rule.PART_TARGET_FIXED, f"PART-TARGET went from "
                           f"{previous.part_target} to {current.part_target}",
                           *tag("#EXT-X-PART-INF")))
    if not current.ended and not previous.ended and \
            dict(previous.server_control) != dict(current.server_control) and \
            previous.server_control and current.server_control:
        out.append(Finding(Rule.SERVER_CONTROL_FIXED, "EXT-X-SERVER-CONTROL changed from "
                           f"{dict(previous.server_control)}", *tag("#EXT-X-SERVER-CONTROL")))
    if current.media_sequence < previous.media_sequence:
        out.append(Finding(Rule.MEDIA_SEQUENCE, f"EXT-X-MEDIA-SEQUENCE went back from "
                           f"{previous.media_sequence} to {current.media_sequence}",
                           *tag("#EXT-X-MEDIA-SEQUENCE")))
    before = {s.msn: s for s in previous.segments}
    for segment in current.segments:
        old = before.get(segment.msn)
        if old is None:
            continue
        where = (segment.line.number, segment.line.text)
        if old.uri != segment.uri or abs(old.duration_s - segment.duration_s) > 1e-6:
            out.append(Finding(Rule.SEGMENT_CHANGED, f"segment {segment.msn} was "
                               f"{old.uri} ({old.duration_s} s)", *where))
        if old.discontinuity_seq != segment.discontinuity_seq:
            out.append(Finding(Rule.DISCONTINUITY_SEQUENCE, f"segment {segment.msn} had "
                               f"discontinuity sequence {old.discontinuity_seq}, now "
                               f"{segment.discontinuity_seq}", *where))
        if old.program_date_time != segment.program_date_time:
            out.append(Finding(Rule.PDT_MONOTONIC, f"segment {segment.msn} was dated "
                               f"{old.program_date_time}", *where))
    if previous.segments and current.segments and not current.skipped:
        last_old = previous.segments[-1]
        first_new = [s for s in current.segments if s.msn > last_old.msn]
        if first_new and last_old.program_date_time and first_new[0].program_date_time \
                and first_new[0].program_date_time < last_old.program_date_time:
            out.append(Finding(Rule.PDT_MONOTONIC, "a new segment is dated before the "
                               "last one of the previous revision", first_new[0].line.number,
                               first_new[0].line.text))
    removed = current.media_sequence > previous.media_sequence
    td = current.target_duration
    if removed and not current.ended and td is not None and not current.skipped and \
            current.duration_s < MIN_WINDOW_TARGET_DURATIONS * td - TOLERANCE_S:
        out.append(Finding(Rule.WINDOW_TOO_SHORT, f"segments were removed leaving "
                           f"{current.duration_s:.3f} s, under 3 x {td}",
                           *tag("#EXT-X-MEDIA-SEQUENCE")))
    if previous.ended and not current.ended:
        out.append(Finding(Rule.ENDLIST, "EXT-X-ENDLIST disappeared"))
    return out


# --- renditions side by side ----------------------------------------------------------


def check_renditions(playlists: Mapping[str, MediaPlaylist]) -> list[Finding]:
    """The renditions of one broadcast, each at its latest revision."""
    out: list[Finding] = []
    live = {name: p for name, p in playlists.items() if not p.ended}
    for label, value in (("EXT-X-TARGETDURATION", lambda p: p.target_duration),
                         ("PART-TARGET", lambda p: p.part_target),
                         ("EXT-X-SERVER-CONTROL",
                          lambda p: tuple(sorted(p.server_control.items())))):
        seen = {name: value(p) for name, p in live.items()}
        if len(set(seen.values())) > 1:
            out.append(Finding(Rule.RENDITIONS_DIFFER, f"{label} differs between "
                               f"renditions: {seen}"))
    where: dict[int, tuple[str, int]] = {}
    for name, playlist in playlists.items():
        for segment in playlist.segments:
            known = where.setdefault(segment.msn, (name, segment.discontinuity_seq))
            if known[1] != segment.discontinuity_seq:
                out.append(Finding(Rule.DISCONTINUITY_SEQUENCE,
                                   f"segment {segment.msn} has discontinuity sequence "
                                   f"{segment.discontinuity_seq}, {known[1]} in {known[0]}",
                                   segment.line.number, segment.line.text, name))
    return out


# --- the multivariant playlist --------------------------------------------------------


def check_multivariant(playlist: MultivariantPlaylist) -> list[Finding]:
    out = list(playlist.syntax)
    if not playlist.variants:
        out.append(Finding(Rule.VARIANT_ATTRIBUTES, "no EXT-X-STREAM-INF"))
    for variant in playlist.variants:
        missing = [name for name, value in (("BANDWIDTH", variant.bandwidth),
                                            ("CODECS", variant.codecs)) if not value]
        if missing:
            out.append(Finding(Rule.VARIANT_ATTRIBUTES, f"{', '.join(missing)} missing",
                               variant.line.number, variant.line.text))
    return out


def _declared(variant: Variant) -> tuple[str | None, str | None, str | None]:
    return variant.codecs, variant.resolution, variant.frame_rate


def check_multivariant_update(previous: MultivariantPlaylist,
                              current: MultivariantPlaylist) -> list[Finding]:
    """A live master read again: the same variants, declaring the same things (its
    BANDWIDTH may follow what was measured)."""
    out: list[Finding] = []
    before = {v.uri: v for v in previous.variants}
    after = {v.uri: v for v in current.variants}
    if set(before) != set(after):
        out.append(Finding(Rule.VARIANT_SET_CHANGED, f"variants were {sorted(before)}, "
                           f"now {sorted(after)}"))
    for uri, variant in after.items():
        old = before.get(uri)
        if old is not None and _declared(old) != _declared(variant):
            out.append(Finding(Rule.VARIANT_CHANGED, f"{uri} declared {_declared(old)}",
                               variant.line.number, variant.line.text))
    return out


def peak_segment_bitrate(segments: Iterable[tuple[float, int]], target_duration: int) -> int:
    """rfc8216bis 4.4.6.2: the largest bit rate of any contiguous run of segments
    (duration s, size bytes) lasting 0.5 to 1.5 target durations (0: no such run)."""
    items = list(segments)
    low, high = (f * target_duration for f in PEAK_RUN)
    best = 0
    for start in range(len(items)):
        bits, seconds = 0, 0.0
        for duration, size in items[start:]:
            bits += size * 8
            seconds += duration
            if seconds > high + 1e-9:
                break
            if seconds >= low - 1e-9:
                best = max(best, math.ceil(bits / seconds))
    return best


def check_bandwidth(variant: Variant, measured_peak_bps: int) -> list[Finding]:
    """The variant's BANDWIDTH against the peak segment bit rate measured on what it
    served (Apple: the measured peak within 10% of it, at most)."""
    if variant.bandwidth is None or measured_peak_bps <= 0:
        return []
    if measured_peak_bps > variant.bandwidth * BANDWIDTH_TOLERANCE:
        return [Finding(Rule.BANDWIDTH, f"measured peak {measured_peak_bps} b/s exceeds "
                        f"BANDWIDTH {variant.bandwidth} by more than 10%",
                        variant.line.number, variant.line.text)]
    return []


def check_durations(playlist: MediaPlaylist, media_s: Mapping[str, float]) -> list[Finding]:
    """EXTINF against the duration of the media each segment URI holds
    (:func:`castway.hls.cmaf.media_duration_s`)."""
    out = []
    for segment in playlist.segments:
        measured = media_s.get(segment.uri)
        if measured is not None and abs(measured - segment.duration_s) > MEDIA_TOLERANCE_S:
            out.append(Finding(Rule.EXTINF_MEDIA, f"EXTINF {segment.duration_s} but the "
                               f"media lasts {measured:.5f} s", segment.line.number,
                               segment.line.text))
    return out


# --- everything, revision after revision ----------------------------------------------


@dataclass
class BroadcastWatch:
    """Every revision of a live broadcast's playlists, as a player reads them: each new
    one is checked on its own, against the previous revision of the same playlist, and
    (media) beside the latest revision of every other rendition."""

    master: MultivariantPlaylist | None = None
    media: dict[str, MediaPlaylist] = field(default_factory=dict)
    revisions: int = 0

    def observe_master(self, text: str) -> list[Finding]:
        current = parse_multivariant(text)
        findings = check_multivariant(current)
        if self.master is not None:
            findings += check_multivariant_update(self.master, current)
        self.master = current
        self.revisions += 1
        return findings

    def observe_media(self, name: str, text: str) -> list[Finding]:
        current = parse_media(text)
        findings = check_media(current)
        previous = self.media.get(name)
        if previous is not None:
            findings += check_media_update(previous, current)
        self.media[name] = current
        findings += check_renditions(self.media)
        self.revisions += 1
        return [f if f.playlist else Finding(f.rule, f.message, f.line, f.text, name)
                for f in findings]

    def variants(self) -> Sequence[Variant]:
        return self.master.variants if self.master is not None else ()
