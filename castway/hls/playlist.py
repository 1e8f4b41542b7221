"""The one HLS playlist renderer of castway (RFC 8216, draft-pantos-hls-rfc8216bis).

Pure functions: a :class:`~castway.model.Rendition` ladder in, a Multivariant (master)
Playlist out; a :class:`~castway.live.base.RenditionWindow` in, a Media Playlist out (live,
EVENT or VOD, optionally with the Low-Latency HLS tags of rfc8216bis 4.4.3.7-4.4.5.4).
The origin (live, LL-HLS), the transcoder's file mode and the archiver's VOD playlists all
call these, so every playlist castway serves follows the same rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from castway.hls.timing import target_duration_of
from castway.live.base import RenditionWindow
from castway.model import Part, Rendition, Segment, SourceInfo

# rfc8216bis 4.4.3.8: PART-HOLD-BACK MUST be >= 2x PART-TARGET and SHOULD be >= 3x; we use 3x.
PART_HOLD_BACK_FACTOR = 3.0
# rfc8216bis 4.4.3.8: HOLD-BACK MUST be >= 3x the Target Duration.
HOLD_BACK_FACTOR = 3.0
# rfc8216bis 4.4.3.8: CAN-SKIP-UNTIL MUST be >= 6x the Target Duration.
SKIP_UNTIL_FACTOR = 6.0
# rfc8216bis 6.2.2: parts more than 3 target durations from the playlist end MUST be removed.
PART_WINDOW_TARGET_DURATIONS = 3.0

# Audio allowance added to a nominal video bitrate when the peak was not measured yet.
AUDIO_ALLOWANCE_BPS = 128_000
# Used when neither a measured nor a nominal bitrate is known (passthrough before stats).
FALLBACK_BANDWIDTH_BPS = 5_000_000
# Peak over nominal bitrate for encoded renditions (x264 VBV allows short excursions).
NOMINAL_PEAK_FACTOR = 1.2
# The audio group of a master with audio renditions, and the NAME of its default
# member: the broadcast's own audio (track 0).
AUDIO_GROUP = "audio"
MAIN_AUDIO_NAME = "Main"


class PlaylistType(StrEnum):
    """EXT-X-PLAYLIST-TYPE (rfc8216bis 4.4.3.5); LIVE means the tag is absent."""

    LIVE = "live"
    EVENT = "event"
    VOD = "vod"


@dataclass(frozen=True, slots=True)
class RenditionReport:
    """EXT-X-RENDITION-REPORT (rfc8216bis 4.4.5.4) for another rendition of the stream."""

    uri: str
    last_msn: int
    last_part: int | None = None


def target_duration(window: RenditionWindow) -> int:
    """EXT-X-TARGETDURATION of a window (:func:`castway.hls.timing.target_duration_of`)."""
    return target_duration_of((s.duration_s for s in window.segments),
                              window.target_duration_s)


def part_target(window: RenditionWindow) -> float:
    """EXT-X-PART-INF PART-TARGET: the configured part target, raised to the longest part
    listed (rfc8216bis 4.4.4.9: no part may exceed it)."""
    longest = max((p.duration_s for p in _all_parts(window)), default=0.0)
    return max(window.part_target_s, longest)


def last_part(window: RenditionWindow) -> tuple[int, int | None]:
    """(LAST-MSN, LAST-PART) of a window as EXT-X-RENDITION-REPORT defines them
    (rfc8216bis 4.4.5.4): the newest part if any, else the newest whole segment."""
    if window.parts:
        return window.parts[-1].msn, window.parts[-1].index
    if window.segments:
        seg = window.segments[-1]
        return seg.msn, (seg.parts[-1].index if seg.parts else None)
    return window.next_msn - 1, None


def rendition_report(window: RenditionWindow, uri: str) -> RenditionReport:
    msn, part = last_part(window)
    return RenditionReport(uri=uri, last_msn=msn, last_part=part)


def render_master_playlist(renditions: Sequence[Rendition], *,
                           uri_for: Callable[[Rendition], str],
                           first: str | None = None) -> str:
    """A Multivariant Playlist (rfc8216bis 4.4.6) with one EXT-X-STREAM-INF per variant.

    Variants are listed by ascending BANDWIDTH; ``first`` (a rendition name) is moved to
    the top, since clients such as Safari start playback with the first listed variant.

    Audio renditions (``Rendition.alternate_audio``) make one audio group (rfc8216bis
    4.4.6.1), the broadcast's own audio (track 0) its default member, each with its media
    playlist; the variants are then video only. Every variant names the group, lists the
    group's codecs too, and counts its largest member in its BANDWIDTH (4.4.6.2: the
    largest sum of any playable combination of renditions).

    Demuxed, not the variants' audio plus alternatives: a player that put a muxed fMP4
    variant in one SourceBuffer cannot take an audio rendition beside it (hls.js answers
    bufferAppendError, and calls the mix unsupported: video-dev/hls.js#5485).
    """
    alternates = [r for r in renditions if r.alternate_audio]
    variants = [r for r in renditions if not r.alternate_audio]
    if alternates and not any(r.width and r.height for r in variants):
        # An audio-only broadcast's variant is its audio: nothing to be an alternative to.
        alternates = []
    ordered = sorted(variants, key=lambda r: (_bandwidth(r)[0], r.name))
    if first is not None:
        ordered.sort(key=lambda r: r.name != first)
    # No EXT-X-INDEPENDENT-SEGMENTS here: in a multivariant playlist it would speak for
    # every variant, and a passthrough variant's segments are not independent during a
    # source's keyframe drought; each media playlist says it for itself.
    lines = ["#EXTM3U", "#EXT-X-VERSION:3"]
    alternates.sort(key=lambda r: (r.track or 0, r.name))
    for i, alt in enumerate(alternates):
        default = "YES" if i == 0 else "NO"  # track 0 first: the broadcast's own
        # CHANNELS: every audio rendition SHOULD have it (rfc8216bis 4.4.6.1).
        channels = f',CHANNELS="{alt.channels}"' if alt.channels else ""
        lines.append(f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{AUDIO_GROUP}",'
                     f'NAME="{_quoted(alternate_audio_name(alt))}",DEFAULT={default},'
                     f'AUTOSELECT={default}{channels},URI="{_quoted(uri_for(alt))}"')
    extra_peak = max((_bandwidth(a)[0] for a in alternates), default=0)
    extra_average = max((_bandwidth(a)[1] or _bandwidth(a)[0] for a in alternates),
                        default=0)
    for rendition in ordered:
        peak, average = _bandwidth(rendition)
        attrs = [f"BANDWIDTH={peak + extra_peak}"]
        if average is not None:
            attrs.append(f"AVERAGE-BANDWIDTH={average + extra_average}")
        codecs = _codec_union([rendition, *alternates])
        if codecs:
            attrs.append(f'CODECS="{_quoted(codecs)}"')
        if rendition.width and rendition.height:
            attrs.append(f"RESOLUTION={rendition.width}x{rendition.height}")
        if rendition.fps:
            attrs.append(f"FRAME-RATE={rendition.fps:.3f}")
        if alternates:
            attrs.append(f'AUDIO="{AUDIO_GROUP}"')
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(_quoted(uri_for(rendition)))
    return "\n".join(lines) + "\n"


def alternate_audio_name(rendition: Rendition) -> str:
    """The NAME of an audio rendition: ``Main`` for the broadcast's own audio (track 0),
    else its track as the encoder numbered it."""
    if rendition.track == 0:
        return MAIN_AUDIO_NAME
    return f"Track {rendition.track}" if rendition.track else rendition.name


def _codec_union(renditions: Sequence[Rendition]) -> str:
    """Every format of the renditions, once each, in order (a variant's CODECS lists the
    formats of the renditions in its groups too, rfc8216bis 4.4.6.2)."""
    seen: list[str] = []
    for rendition in renditions:
        for codec in rendition.codecs.split(","):
            if codec and codec not in seen:
                seen.append(codec)
    return ",".join(seen)


def segment_starts(segments: Sequence[Segment], live_parts: Sequence[Part]) -> list[bool]:
    """Whether each segment begins independent (with a keyframe), as its first part says,
    the segment in progress included once its first part is out; segments without parts
    (MPEG-TS) say nothing."""
    starts = [s.parts[0].independent for s in segments if s.parts]
    if live_parts and live_parts[0].index == 0:
        starts.append(live_parts[0].independent)
    return starts


def _all_independent(segments: Sequence[Segment], live_parts: Sequence[Part]) -> bool:
    """Whether every segment starts independent (segments without parts, MPEG-TS, are
    taken as they are claimed)."""
    return all(segment_starts(segments, live_parts))


def render_media_playlist(window: RenditionWindow, *,
                          uri_for_key: Callable[[str], str],
                          playlist_type: PlaylistType = PlaylistType.LIVE,
                          low_latency: bool = False,
                          skip: bool = False,
                          can_skip: bool = True,
                          rendition_reports: Iterable[RenditionReport] = (),
                          hold_back_s: float | None = None,
                          part_hold_back_s: float | None = None,
                          independent_segments: bool = True) -> str:
    """A Media Playlist (rfc8216bis 4.4.3-4.4.5) of ``window``.

    ``low_latency`` adds EXT-X-SERVER-CONTROL (blocking reload, hold backs, and
    CAN-SKIP-UNTIL when ``can_skip``), EXT-X-PART-INF, EXT-X-PART for the segments of the
    last three target durations and the segment in progress, EXT-X-PRELOAD-HINT and
    EXT-X-RENDITION-REPORT. ``skip`` renders a Playlist Delta Update (rfc8216bis 6.2.5.1):
    segments older than the skip boundary are replaced by EXT-X-SKIP.

    An ended window (or VOD) gets EXT-X-ENDLIST and no in-progress parts or hints.
    """
    ended = window.ended or playlist_type is PlaylistType.VOD
    td = target_duration(window)
    segments = window.segments
    live_parts = () if ended else window.parts
    edge = sum(s.duration_s for s in segments) + sum(p.duration_s for p in live_parts)
    can_skip_until = SKIP_UNTIL_FACTOR * td if (low_latency and can_skip and not ended) \
        else None

    skipped = 0
    if skip and can_skip_until is not None:
        skipped = _skippable(segments, edge - can_skip_until)

    init_keys = {s.init_key or window.init_key for s in segments}
    if live_parts and window.init_key:
        init_keys.add(window.init_key)
    uses_map = any(k is not None for k in init_keys)
    version = 3
    if uses_map:
        version = 6  # EXT-X-MAP without EXT-X-I-FRAMES-ONLY (rfc8216bis 7)
    if skipped:
        version = 9  # EXT-X-SKIP (rfc8216bis 7)

    first_msn = segments[0].msn if segments else window.next_msn
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{version}", f"#EXT-X-TARGETDURATION:{td}"]
    if independent_segments and _all_independent(segments, live_parts):
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    pt = part_target(window)
    if low_latency and not ended:
        control = ["CAN-BLOCK-RELOAD=YES"]
        if can_skip_until is not None:
            control.append(f"CAN-SKIP-UNTIL={_fmt(can_skip_until, 1)}")
        hold_back = max(hold_back_s or 0.0, HOLD_BACK_FACTOR * td)
        control.append(f"HOLD-BACK={_fmt(hold_back, 3)}")
        part_hold_back = max(part_hold_back_s or 0.0, PART_HOLD_BACK_FACTOR * pt)
        control.append(f"PART-HOLD-BACK={_fmt(part_hold_back, 3)}")
        lines.append("#EXT-X-SERVER-CONTROL:" + ",".join(control))
    if low_latency:
        lines.append(f"#EXT-X-PART-INF:PART-TARGET={_fmt(pt, 5)}")
    lines.append(f"#EXT-X-MEDIA-SEQUENCE:{first_msn}")
    lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{window.discontinuity_seq}")
    if playlist_type is PlaylistType.EVENT:
        lines.append("#EXT-X-PLAYLIST-TYPE:EVENT")
    elif playlist_type is PlaylistType.VOD:
        lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
    if skipped:
        lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")

    part_horizon = edge - PART_WINDOW_TARGET_DURATIONS * td
    current_map: str | None = None
    start = sum(s.duration_s for s in segments[:skipped])
    for index, segment in enumerate(segments):
        if index < skipped:
            continue
        init = segment.init_key or window.init_key
        if segment.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        if init is not None and init != current_map:
            lines.append(f'#EXT-X-MAP:URI="{_quoted(uri_for_key(init))}"')
            current_map = init
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_pdt(segment.program_date_time)}")
        if low_latency and not ended and start >= part_horizon - 1e-9:
            lines.extend(_part_line(p, uri_for_key) for p in segment.parts)
        lines.append(f"#EXTINF:{_fmt(segment.duration_s, 5)},")
        lines.append(_quoted(uri_for_key(segment.key)))
        start += segment.duration_s

    if low_latency and not ended:
        if live_parts and window.init_key and window.init_key != current_map:
            lines.append(f'#EXT-X-MAP:URI="{_quoted(uri_for_key(window.init_key))}"')
        lines.extend(_part_line(p, uri_for_key) for p in live_parts)
        if window.preload_hint:
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,'
                         f'URI="{_quoted(uri_for_key(window.preload_hint))}"')
        for report in rendition_reports:
            attrs = [f'URI="{_quoted(report.uri)}"', f"LAST-MSN={report.last_msn}"]
            if report.last_part is not None:
                attrs.append(f"LAST-PART={report.last_part}")
            lines.append("#EXT-X-RENDITION-REPORT:" + ",".join(attrs))
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _skippable(segments: Sequence[Segment], boundary: float) -> int:
    """How many leading segments end before the skip boundary (rfc8216bis 6.2.5.1: only
    segments older than CAN-SKIP-UNTIL from the playlist end may be skipped)."""
    count = 0
    end = 0.0
    for segment in segments:
        end += segment.duration_s
        if end > boundary + 1e-9:
            break
        count += 1
    return count


def _all_parts(window: RenditionWindow) -> Iterable[Part]:
    for segment in window.segments:
        yield from segment.parts
    yield from window.parts


def _part_line(part: Part, uri_for_key: Callable[[str], str]) -> str:
    attrs = [f"DURATION={_fmt(part.duration_s, 5)}", f'URI="{_quoted(uri_for_key(part.key))}"']
    if part.independent:
        attrs.append("INDEPENDENT=YES")
    return "#EXT-X-PART:" + ",".join(attrs)


def source_bitrate_kbps(source: SourceInfo | None, observed_kbps: float | None, *,
                        audio_only: bool = False) -> float | None:
    """The nominal bitrate of a passthrough rendition (video, or the audio of an
    audio-only one) before its segments are measured: what the publisher declared
    (onMetaData videodatarate / audiodatarate), else what ingest observed arriving (all
    media, so an over- rather than an under-estimate)."""
    declared = None
    if source is not None:
        declared = source.audio_bitrate_kbps if audio_only else source.video_bitrate_kbps
    if declared:
        return declared
    if observed_kbps is not None and observed_kbps > 0:
        return observed_kbps
    return None


def _bandwidth(rendition: Rendition) -> tuple[int, int | None]:
    """(BANDWIDTH, AVERAGE-BANDWIDTH): measured when known, else from the nominal
    bitrate, else a conservative guess (BANDWIDTH is required, rfc8216bis 4.4.6.2)."""
    if rendition.bandwidth_bps:
        return rendition.bandwidth_bps, rendition.average_bandwidth_bps
    audio_only = rendition.width is None and rendition.height is None
    if rendition.video_bitrate_kbps:
        # An audio-only rendition's nominal bitrate is its audio's (source_bitrate_kbps).
        nominal = int(rendition.video_bitrate_kbps * 1000) + \
            (0 if audio_only else AUDIO_ALLOWANCE_BPS)
        average = rendition.average_bandwidth_bps or nominal
        return int(nominal * NOMINAL_PEAK_FACTOR), average
    if audio_only:
        return int(AUDIO_ALLOWANCE_BPS * NOMINAL_PEAK_FACTOR), rendition.average_bandwidth_bps
    return FALLBACK_BANDWIDTH_BPS, rendition.average_bandwidth_bps


def _fmt(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def _pdt(when: datetime) -> str:
    """ISO 8601 with milliseconds and an explicit offset (rfc8216bis 4.4.4.6)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    text = when.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _quoted(value: str) -> str:
    """A quoted-string may not contain '"', CR or LF (rfc8216bis 4.2)."""
    if any(c in value for c in '"\r\n'):
        raise ValueError(f"not representable as an HLS quoted-string: {value!r}")
    return value
