"""An RFC 8216 / draft-pantos-hls-rfc8216bis playlist validator for tests.

``validate_playlist(text)`` returns the list of violations (empty when valid) of a
Multivariant (master) or Media Playlist; ``validate_update(old, new)`` checks that a
reloaded live Media Playlist follows the previous one (rfc8216bis 6.2.1, 6.2.2).
The rules are the MUSTs of the spec that castway's playlists touch, plus castway's own
choice of PART-HOLD-BACK >= 3x PART-TARGET (the spec's SHOULD).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime

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
_ONCE = {"#EXT-X-VERSION", "#EXT-X-TARGETDURATION", "#EXT-X-MEDIA-SEQUENCE",
         "#EXT-X-DISCONTINUITY-SEQUENCE", "#EXT-X-PLAYLIST-TYPE", "#EXT-X-PART-INF",
         "#EXT-X-SERVER-CONTROL", "#EXT-X-ENDLIST", "#EXT-X-SKIP"}
# rfc8216bis 6.2.2: parts further than this many target durations from the end MUST go.
PART_WINDOW_TARGET_DURATIONS = 3
TOLERANCE_S = 1e-6


def parse_attributes(text: str) -> dict[str, str]:
    """An attribute-list (rfc8216bis 4.2); quoted values keep their quotes."""
    return {m.group(1): m.group(2) for m in _ATTR.finditer(text)}


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@dataclass
class _Segment:
    line: int
    duration: float
    uri: str = ""
    pdt: datetime | None = None
    parts: list[float] = field(default_factory=list)
    has_map: bool = False


@dataclass
class MediaInfo:
    """What the validator read from a Media Playlist (for update checks and tests)."""

    media_sequence: int = 0
    skipped: int = 0
    target_duration: int | None = None
    uris: list[str] = field(default_factory=list)
    ended: bool = False


def validate_playlist(text: str, *, require_pdt: bool = True) -> list[str]:
    """Violations of ``text`` (a master or media playlist); empty when it is valid."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "#EXTM3U":
        return ["first line must be #EXTM3U (RFC 8216 4.3.1.1)"]
    tags = {ln.split(":", 1)[0] for ln in lines if ln.startswith("#EXT")}
    errors: list[str] = []
    for tag in _ONCE:
        count = sum(1 for ln in lines if ln.split(":", 1)[0] == tag)
        if count > 1:
            errors.append(f"{tag} appears {count} times (at most once)")
    is_master = bool(tags & _MASTER_TAGS)
    is_media = bool(tags & (_SEGMENT_TAGS | _MEDIA_PLAYLIST_TAGS))
    if is_master and is_media:
        errors.append("playlist mixes master and media tags (RFC 8216 4.1)")
        return errors
    if is_master:
        errors += _validate_master(lines)
    else:
        errors += _validate_media(lines, require_pdt=require_pdt)[0]
    return errors


def _validate_master(lines: list[str]) -> list[str]:
    errors: list[str] = []
    pending: int | None = None
    variants = 0
    for number, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#EXT-X-STREAM-INF:"):
            if pending is not None:
                errors.append(f"line {pending}: EXT-X-STREAM-INF without a URI")
            pending = number
            variants += 1
            attrs = parse_attributes(line.split(":", 1)[1])
            bw = attrs.get("BANDWIDTH")
            if bw is None or not bw.isdigit():
                errors.append(f"line {number}: BANDWIDTH missing or not an integer")
            avg = attrs.get("AVERAGE-BANDWIDTH")
            if avg is not None and not avg.isdigit():
                errors.append(f"line {number}: AVERAGE-BANDWIDTH not an integer")
            res = attrs.get("RESOLUTION")
            if res is not None and not re.fullmatch(r"\d+x\d+", res):
                errors.append(f"line {number}: RESOLUTION must be WIDTHxHEIGHT")
            fr = attrs.get("FRAME-RATE")
            if fr is not None and not re.fullmatch(r"\d+(\.\d{1,3})?", fr):
                errors.append(f"line {number}: FRAME-RATE must have at most 3 decimals")
            codecs = attrs.get("CODECS")
            if codecs is not None and not codecs.startswith('"'):
                errors.append(f"line {number}: CODECS must be a quoted-string")
        elif line.startswith("#"):
            continue
        else:
            if pending is None:
                errors.append(f"line {number}: URI without EXT-X-STREAM-INF")
            pending = None
    if pending is not None:
        errors.append(f"line {pending}: EXT-X-STREAM-INF without a URI")
    if variants == 0:
        errors.append("master playlist has no EXT-X-STREAM-INF")
    return errors


def _validate_media(lines: list[str], *, require_pdt: bool) -> tuple[list[str], MediaInfo]:
    errors: list[str] = []
    info = MediaInfo()
    version = 1
    target: int | None = None
    part_target: float | None = None
    control: dict[str, str] = {}
    playlist_type: str | None = None
    segments: list[_Segment] = []
    pending_parts: list[float] = []
    pending_pdt: datetime | None = None
    pending_map = False
    pending_extinf: _Segment | None = None
    uses_map = False
    float_extinf = False
    first_segment_line: int | None = None
    endlist_line: int | None = None
    skip_line: int | None = None
    hints: list[str] = []
    part_uris: set[str] = set()

    for number, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if not line:
            continue
        if endlist_line is not None and not line.startswith("#"):
            errors.append(f"line {number}: URI after EXT-X-ENDLIST")
        name, _, value = line.partition(":")
        if not line.startswith("#"):
            if pending_extinf is None:
                errors.append(f"line {number}: URI without EXTINF")
                continue
            pending_extinf.uri = line
            segments.append(pending_extinf)
            info.uris.append(line)
            pending_extinf = None
            continue
        if name in _SEGMENT_TAGS and first_segment_line is None:
            first_segment_line = number
        if name == "#EXT-X-VERSION":
            version = int(value) if value.isdigit() else 0
        elif name == "#EXT-X-TARGETDURATION":
            if not value.isdigit():
                errors.append(f"line {number}: EXT-X-TARGETDURATION must be an integer")
            else:
                target = int(value)
        elif name == "#EXT-X-MEDIA-SEQUENCE":
            if not value.isdigit():
                errors.append(f"line {number}: EXT-X-MEDIA-SEQUENCE must be an integer")
            else:
                info.media_sequence = int(value)
            if first_segment_line is not None:
                errors.append(f"line {number}: EXT-X-MEDIA-SEQUENCE after the first segment")
        elif name == "#EXT-X-DISCONTINUITY-SEQUENCE":
            if not value.isdigit():
                errors.append(f"line {number}: EXT-X-DISCONTINUITY-SEQUENCE not an integer")
            if first_segment_line is not None:
                errors.append(f"line {number}: EXT-X-DISCONTINUITY-SEQUENCE after the "
                              "first segment (RFC 8216 4.3.3.3)")
        elif name == "#EXT-X-PLAYLIST-TYPE":
            playlist_type = value
            if value not in ("EVENT", "VOD"):
                errors.append(f"line {number}: EXT-X-PLAYLIST-TYPE must be EVENT or VOD")
        elif name == "#EXT-X-ENDLIST":
            endlist_line = number
            info.ended = True
        elif name == "#EXT-X-PART-INF":
            part_target = _float(parse_attributes(value).get("PART-TARGET"))
            if part_target is None:
                errors.append(f"line {number}: EXT-X-PART-INF without PART-TARGET")
        elif name == "#EXT-X-SERVER-CONTROL":
            control = parse_attributes(value)
        elif name == "#EXT-X-SKIP":
            skip_line = number
            skipped = parse_attributes(value).get("SKIPPED-SEGMENTS", "")
            if not skipped.isdigit():
                errors.append(f"line {number}: EXT-X-SKIP without SKIPPED-SEGMENTS")
            else:
                info.skipped = int(skipped)
            if first_segment_line is not None and first_segment_line < number:
                errors.append(f"line {number}: EXT-X-SKIP after the first segment")
        elif name == "#EXTINF":
            duration_text = value.split(",", 1)[0]
            duration = _float(duration_text)
            if duration is None or duration < 0:
                errors.append(f"line {number}: EXTINF duration {duration_text!r} invalid")
                duration = 0.0
            if "." in duration_text:
                float_extinf = True
            if pending_extinf is not None:
                errors.append(f"line {number}: EXTINF follows EXTINF without a URI")
            pending_extinf = _Segment(number, duration, pdt=pending_pdt,
                                      parts=pending_parts, has_map=pending_map)
            pending_parts, pending_pdt, pending_map = [], None, False
        elif name == "#EXT-X-PROGRAM-DATE-TIME":
            try:
                pending_pdt = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                errors.append(f"line {number}: EXT-X-PROGRAM-DATE-TIME {value!r} not ISO 8601")
            else:
                if pending_pdt.tzinfo is None:
                    errors.append(f"line {number}: EXT-X-PROGRAM-DATE-TIME without offset")
        elif name == "#EXT-X-MAP":
            uses_map = True
            pending_map = True
            if "URI" not in parse_attributes(value):
                errors.append(f"line {number}: EXT-X-MAP without URI")
        elif name == "#EXT-X-PART":
            attrs = parse_attributes(value)
            duration = _float(attrs.get("DURATION"))
            uri = attrs.get("URI")
            if duration is None or uri is None:
                errors.append(f"line {number}: EXT-X-PART needs DURATION and URI")
                continue
            if uri in part_uris:
                errors.append(f"line {number}: EXT-X-PART URI {uri} listed twice")
            part_uris.add(uri)
            if part_target is None:
                errors.append(f"line {number}: EXT-X-PART without EXT-X-PART-INF")
            elif duration > part_target + TOLERANCE_S:
                errors.append(f"line {number}: part duration {duration} exceeds "
                              f"PART-TARGET {part_target} (rfc8216bis 4.4.4.9)")
            pending_parts.append(duration)
        elif name == "#EXT-X-PRELOAD-HINT":
            attrs = parse_attributes(value)
            if attrs.get("TYPE") not in ("PART", "MAP") or "URI" not in attrs:
                errors.append(f"line {number}: EXT-X-PRELOAD-HINT needs TYPE=PART|MAP, URI")
            else:
                if attrs["TYPE"] in hints:
                    errors.append(f"line {number}: two EXT-X-PRELOAD-HINT of one TYPE")
                hints.append(attrs["TYPE"])
                if attrs["URI"] in part_uris:
                    errors.append(f"line {number}: PRELOAD-HINT names an existing part")
        elif name == "#EXT-X-RENDITION-REPORT":
            attrs = parse_attributes(value)
            if "URI" not in attrs:
                errors.append(f"line {number}: EXT-X-RENDITION-REPORT without URI")
            for key in ("LAST-MSN", "LAST-PART"):
                if key in attrs and not attrs[key].isdigit():
                    errors.append(f"line {number}: {key} must be an integer")

    if pending_extinf is not None:
        errors.append(f"line {pending_extinf.line}: EXTINF without a URI")
    info.target_duration = target
    if target is None:
        errors.append("EXT-X-TARGETDURATION missing (RFC 8216 4.3.3.1)")
        target = 0
    for seg in segments:
        if math.floor(seg.duration + 0.5) > target:
            errors.append(f"line {seg.line}: EXTINF {seg.duration} rounds above "
                          f"EXT-X-TARGETDURATION {target} (RFC 8216 4.3.3.1)")
        if require_pdt and seg.pdt is None:
            errors.append(f"line {seg.line}: segment without EXT-X-PROGRAM-DATE-TIME")
        if seg.parts and abs(sum(seg.parts) - seg.duration) > 0.05:
            errors.append(f"line {seg.line}: parts sum to {sum(seg.parts):.3f}, "
                          f"EXTINF is {seg.duration}")
    for earlier, later in zip(segments, segments[1:], strict=False):
        if earlier.pdt and later.pdt and later.pdt < earlier.pdt:
            errors.append(f"line {later.line}: EXT-X-PROGRAM-DATE-TIME goes backwards")

    if float_extinf and version < 3:
        errors.append("floating-point EXTINF needs EXT-X-VERSION >= 3")
    if uses_map and version < 6:
        errors.append("EXT-X-MAP needs EXT-X-VERSION >= 6 (rfc8216bis 7)")
    if skip_line is not None and version < 9:
        errors.append("EXT-X-SKIP needs EXT-X-VERSION >= 9 (rfc8216bis 7)")
    if uses_map and segments and not segments[0].has_map:
        errors.append("fMP4 playlist: the first segment must be preceded by EXT-X-MAP")
    if playlist_type == "VOD" and endlist_line is None:
        errors.append("EXT-X-PLAYLIST-TYPE:VOD requires EXT-X-ENDLIST")
    if endlist_line is not None and hints:
        errors.append("EXT-X-PRELOAD-HINT in an ended playlist")

    has_parts = bool(part_uris) or part_target is not None
    if has_parts and part_target is not None:
        phb = _float(control.get("PART-HOLD-BACK"))
        if endlist_line is None and phb is None:
            errors.append("EXT-X-PART-INF requires SERVER-CONTROL PART-HOLD-BACK")
        elif phb is not None and phb < 3 * part_target - TOLERANCE_S:
            errors.append(f"PART-HOLD-BACK {phb} < 3x PART-TARGET {part_target}")
    hold_back = _float(control.get("HOLD-BACK"))
    if hold_back is not None and hold_back < 3 * target - TOLERANCE_S:
        errors.append(f"HOLD-BACK {hold_back} < 3x EXT-X-TARGETDURATION {target}")
    skip_until = _float(control.get("CAN-SKIP-UNTIL"))
    if skip_until is not None and skip_until < 6 * target - TOLERANCE_S:
        errors.append(f"CAN-SKIP-UNTIL {skip_until} < 6x EXT-X-TARGETDURATION {target}")
    if skip_line is not None and skip_until is None:
        errors.append("EXT-X-SKIP without SERVER-CONTROL CAN-SKIP-UNTIL")
    if control.get("CAN-BLOCK-RELOAD") not in (None, "YES"):
        errors.append("CAN-BLOCK-RELOAD must be YES when present")

    # Parts must not linger more than three target durations from the end (6.2.2).
    if target:
        from_end = sum(pending_parts)
        for seg in reversed(segments):
            from_end += seg.duration
            if seg.parts and from_end > PART_WINDOW_TARGET_DURATIONS * target + 1e-3:
                errors.append(f"line {seg.line}: parts listed more than "
                              f"{PART_WINDOW_TARGET_DURATIONS} target durations from the end")
    return errors, info


def media_info(text: str) -> MediaInfo:
    """The media sequence, URIs and end state of a Media Playlist."""
    return _validate_media(text.splitlines(), require_pdt=False)[1]


def validate_update(old: str, new: str) -> list[str]:
    """Violations of a live reload: MEDIA-SEQUENCE never decreases, and a segment that
    is in both playlists keeps its URI (rfc8216bis 6.2.1); an ended playlist stays ended."""
    before, after = media_info(old), media_info(new)
    errors: list[str] = []
    if after.media_sequence < before.media_sequence:
        errors.append(f"EXT-X-MEDIA-SEQUENCE went from {before.media_sequence} "
                      f"to {after.media_sequence}")
    old_by_msn = {before.media_sequence + before.skipped + i: uri
                  for i, uri in enumerate(before.uris)}
    for i, uri in enumerate(after.uris):
        msn = after.media_sequence + after.skipped + i
        if msn in old_by_msn and old_by_msn[msn] != uri:
            errors.append(f"segment {msn} changed URI: {old_by_msn[msn]} -> {uri}")
    if before.ended and not after.ended:
        errors.append("EXT-X-ENDLIST disappeared")
    if before.target_duration != after.target_duration:
        errors.append("EXT-X-TARGETDURATION changed (rfc8216bis 6.2.1)")
    return errors
