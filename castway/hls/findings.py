"""What a playlist check reports: a :class:`Finding` names a :class:`Rule`, says how bad it
is, cites the spec behind the rule and quotes the exact playlist lines behind it.

One type for every checker of castway's HLS: the invariants the tests hold castway's own
playlists to (:mod:`castway.hls.invariants`) and ``castway check`` (``conformance/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    """VIOLATION breaks a MUST (or a rule castway holds itself to); WARNING a SHOULD."""

    VIOLATION = "violation"
    WARNING = "warning"


class Rule(StrEnum):
    """Every rule; :data:`SPEC` says where each comes from."""

    SYNTAX = "syntax"
    VERSION = "version"
    PLAYLIST_TYPE = "playlist-type"
    MAP = "map"
    TARGET_DURATION_CHANGED = "target-duration-changed"
    EXTINF_OVER_TARGET = "extinf-over-target"
    EXTINF_VS_MEDIA = "extinf-vs-media"
    TIMESTAMPS_VS_EXTINF = "timestamps-vs-extinf"
    SEGMENT_REMOVED_EARLY = "segment-removed-early"
    BANDWIDTH_BELOW_PEAK = "bandwidth-below-peak"
    BANDWIDTH_FAR_ABOVE_PEAK = "bandwidth-far-above-peak"
    DISCONTINUITY_SEQUENCE = "discontinuity-sequence"
    PROGRAM_DATE_TIME = "program-date-time"
    MEDIA_SEQUENCE = "media-sequence"
    ENDED_PLAYLIST_CHANGED = "ended-playlist-changed"
    SERVER_CONTROL_CHANGED = "server-control-changed"
    PART_TARGET_CHANGED = "part-target-changed"
    DIFFERS_ACROSS_RENDITIONS = "differs-across-renditions"
    HOLD_BACK = "hold-back"
    PART_HOLD_BACK = "part-hold-back"
    SKIP_UNTIL = "skip-until"
    CAN_BLOCK_RELOAD = "can-block-reload"
    PART_OVER_TARGET = "part-over-target"
    PARTS_VS_EXTINF = "parts-vs-extinf"
    PARTS_WINDOW = "parts-window"
    PRELOAD_HINT = "preload-hint"
    RENDITION_REPORT = "rendition-report"
    VARIANT_ATTRIBUTES = "variant-attributes"
    VARIANT_SET_CHANGED = "variant-set-changed"
    VARIANT_ATTRIBUTES_CHANGED = "variant-attributes-changed"
    VARIANT_BANDWIDTH_CHANGED = "variant-bandwidth-changed"
    CODECS_VS_MEDIA = "codecs-vs-media"
    RESOLUTION_VS_MEDIA = "resolution-vs-media"
    SEGMENT_STARTS_WITHOUT_KEYFRAME = "segment-starts-without-keyframe"
    SEGMENT_UNDECODABLE = "segment-undecodable"
    UNREACHABLE = "unreachable"


#: Where each rule comes from (draft-pantos-hls-rfc8216bis sections; "Apple" is the HLS
#: Authoring Specification for Apple Devices; "castway" a rule castway holds itself to).
SPEC: dict[Rule, str] = {
    Rule.SYNTAX: "rfc8216bis 4.1-4.4 (tags, attributes, their order and count)",
    Rule.VERSION: "rfc8216bis 7 (EXT-X-VERSION covers the features used)",
    Rule.PLAYLIST_TYPE: "rfc8216bis 4.4.3.5 (VOD playlists end with EXT-X-ENDLIST)",
    Rule.MAP: "rfc8216bis 4.4.4.5 (an fMP4 segment follows its EXT-X-MAP)",
    Rule.TARGET_DURATION_CHANGED: "rfc8216bis 6.2.1 (MUST NOT change)",
    Rule.EXTINF_OVER_TARGET: "rfc8216bis 4.4.3.1",
    Rule.EXTINF_VS_MEDIA: "rfc8216bis 4.4.4.1; Apple 6.x (EXTINF = media duration)",
    Rule.TIMESTAMPS_VS_EXTINF: "rfc8216bis 4.4.4.1, 6.2.1 (timestamps follow EXTINF)",
    Rule.SEGMENT_REMOVED_EARLY: "rfc8216bis 6.2.2 (three target durations)",
    Rule.BANDWIDTH_BELOW_PEAK: "rfc8216bis 4.4.6.2; Apple 8.x (peak within 10%)",
    Rule.BANDWIDTH_FAR_ABOVE_PEAK: "Apple 8.x (measured peak within 10% of BANDWIDTH)",
    Rule.DISCONTINUITY_SEQUENCE: "rfc8216bis 4.4.3.3, 6.2.1, 6.2.2 (variants aligned)",
    Rule.PROGRAM_DATE_TIME: "rfc8216bis 4.4.4.6 (monotonic, stable per segment)",
    Rule.MEDIA_SEQUENCE: "rfc8216bis 4.4.3.2, 6.2.1, 6.2.2",
    Rule.ENDED_PLAYLIST_CHANGED: "rfc8216bis 6.2.1 (EXT-X-ENDLIST: no more changes)",
    Rule.SERVER_CONTROL_CHANGED: "rfc8216bis 4.4.3.8, 6.2.1",
    Rule.PART_TARGET_CHANGED: "rfc8216bis 4.4.3.7",
    Rule.DIFFERS_ACROSS_RENDITIONS: "rfc8216bis 4.4.3.7/4.4.3.8 (renditions agree); Apple 9.x",
    Rule.HOLD_BACK: "rfc8216bis 4.4.3.8 (HOLD-BACK >= 3 x TARGETDURATION)",
    Rule.PART_HOLD_BACK: "rfc8216bis 4.4.3.8 (MUST >= 2x, SHOULD >= 3x PART-TARGET)",
    Rule.SKIP_UNTIL: "rfc8216bis 4.4.3.8 (CAN-SKIP-UNTIL >= 6 x TARGETDURATION), 4.4.5.2",
    Rule.CAN_BLOCK_RELOAD: "rfc8216bis 4.4.3.8, 6.2.5.2 (LL-HLS needs blocking reload)",
    Rule.PART_OVER_TARGET: "rfc8216bis 4.4.4.9 (part DURATION <= PART-TARGET)",
    Rule.PARTS_VS_EXTINF: "rfc8216bis 4.4.4.9 (parts make up their segment)",
    Rule.PARTS_WINDOW: "rfc8216bis 6.2.2 (parts older than 3 target durations removed)",
    Rule.PRELOAD_HINT: "rfc8216bis 4.4.5.3; Apple LL-HLS",
    Rule.RENDITION_REPORT: "rfc8216bis 4.4.5.4; Apple LL-HLS",
    Rule.VARIANT_ATTRIBUTES: "rfc8216bis 4.4.6.2 (BANDWIDTH required, CODECS SHOULD)",
    Rule.VARIANT_SET_CHANGED: "rfc8216bis 6.2.4; Apple 9.x (stable Multivariant Playlist)",
    Rule.VARIANT_ATTRIBUTES_CHANGED: "rfc8216bis 6.2.4 (stable Multivariant Playlist)",
    Rule.VARIANT_BANDWIDTH_CHANGED: "rfc8216bis 6.2.4 (stable Multivariant Playlist)",
    Rule.CODECS_VS_MEDIA: "rfc8216bis 4.4.6.2 (CODECS names every format present)",
    Rule.RESOLUTION_VS_MEDIA: "rfc8216bis 4.4.6.2 (RESOLUTION)",
    Rule.SEGMENT_STARTS_WITHOUT_KEYFRAME: "rfc8216bis 4.4.2.1 (INDEPENDENT-SEGMENTS); "
                                          "Apple 1.x (segments start with an IDR)",
    Rule.SEGMENT_UNDECODABLE: "rfc8216bis 3 (Media Segments)",
    Rule.UNREACHABLE: "rfc8216bis 6.2.1 (what a playlist lists is available)",
}


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a playlist, numbered from 1 as an editor shows it; ``url`` names the
    playlist (its URL, or a rendition's name)."""

    url: str
    number: int
    text: str

    def __str__(self) -> str:
        return f"{self.url}:{self.number}  {self.text}" if self.url else \
            f"{self.number}  {self.text}"


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule broken once. ``subject`` is what broke it (a playlist URL or name, or the
    master); ``key`` tells repeats apart, so the same fault seen on every reload is
    reported once by a :class:`~castway.hls.watch.BroadcastWatch`."""

    rule: Rule
    severity: Severity
    subject: str
    message: str
    lines: tuple[Line, ...] = ()
    key: str = ""

    @property
    def spec(self) -> str:
        return SPEC[self.rule]

    @property
    def identity(self) -> tuple[str, str, str]:
        return self.rule.value, self.subject, self.key or self.message

    def __str__(self) -> str:
        where = f"{self.subject}: " if self.subject else ""
        quoted = "".join(f"\n    {line}" for line in self.lines)
        return f"{where}[{self.rule}] {self.message}{quoted}"
