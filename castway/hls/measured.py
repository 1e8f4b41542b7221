"""The rules that hold a playlist against its media: EXTINF against the media's duration
and timestamps, BANDWIDTH against the peak segment bit rate, CODECS and RESOLUTION against
what decodes, keyframes where segments start.

Sans-IO and pure over facts: what a segment's media says (:class:`SegmentFacts`, measured
by whoever has the bytes: ``conformance.segments`` with PyAV, or
:func:`castway.hls.cmaf.media_duration_s`) in, findings out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from castway.hls.findings import Finding, Line, Rule, Severity
from castway.hls.reading import MediaPlaylist, Segment, Variant

V, W = Severity.VIOLATION, Severity.WARNING

#: rfc8216bis 4.4.6.2: the peak segment bit rate is over runs this long (target durations).
PEAK_RUN = (0.5, 1.5)
#: Apple's authoring spec: the measured peak may exceed BANDWIDTH by 10% at most.
BANDWIDTH_TOLERANCE = 0.10
#: Declared BANDWIDTH this many times the measured peak is "wildly above" it: players
#: then pick a lower variant than the network allows.
BANDWIDTH_FAR_ABOVE = 2.0
#: Segments measured before BANDWIDTH is judged too high (one short segment says little).
BANDWIDTH_MIN_SEGMENTS = 3
#: Slack for durations written with few decimals (EXTINF:2.000 for 2.0005 s of media).
DURATION_SLACK_S = 0.002
#: EXTINF against media whose frame duration is unknown: one frame at 24 fps either way.
MEDIA_TOLERANCE_S = 0.042


@dataclass(frozen=True, slots=True)
class SegmentFacts:
    """One segment as its media tells it. ``error`` is set when it could not be decoded;
    the other fields then hold what was read before the failure."""

    size_bytes: int
    duration_s: float | None = None  # first video (else audio) timestamp to last + its duration
    first_pts_s: float | None = None
    first_frame_keyframe: bool | None = None
    codecs: tuple[str, ...] = ()  # RFC 6381 names where known: avc1.64001f, mp4a.40.2
    width: int | None = None
    height: int | None = None
    frame_duration_s: float | None = None
    error: str | None = None


def _slack(frame_s: float | None) -> float:
    return frame_s + DURATION_SLACK_S if frame_s else MEDIA_TOLERANCE_S


def check_extinf_vs_media(p: MediaPlaylist, s: Segment, media_s: float,
                          frame_s: float | None = None) -> list[Finding]:
    """rfc8216bis 4.4.4.1: EXTINF is the segment's duration, within one frame."""
    if abs(media_s - s.duration) <= _slack(frame_s):
        return []
    return [Finding(Rule.EXTINF_VS_MEDIA, V, p.url,
                    f"segment {s.msn}: EXTINF {s.duration:g} s, its media lasts "
                    f"{media_s:.5f} s", (s.extinf,), key=s.uri)]


def check_durations(p: MediaPlaylist, media_s: Mapping[str, float]) -> list[Finding]:
    """EXTINF against the duration of the media each segment URI holds."""
    out: list[Finding] = []
    for s in p.segments:
        if s.uri in media_s:
            out += check_extinf_vs_media(p, s, media_s[s.uri])
    return out


def check_segment(p: MediaPlaylist, s: Segment, facts: SegmentFacts) -> list[Finding]:
    """One segment's media on its own: it decodes, starts with a keyframe, lasts EXTINF."""
    out: list[Finding] = []
    if facts.error is not None:
        out.append(Finding(Rule.SEGMENT_UNDECODABLE, V, p.url,
                           f"segment {s.msn} does not decode: {facts.error}", (s.extinf,),
                           key=s.uri))
    if facts.first_frame_keyframe is False:
        claimed = p.independent_segments or bool(s.parts and s.parts[0].independent)
        out.append(Finding(Rule.SEGMENT_STARTS_WITHOUT_KEYFRAME, V if claimed else W, p.url,
                           f"segment {s.msn} does not start with a keyframe"
                           + (" (the playlist claims EXT-X-INDEPENDENT-SEGMENTS)"
                              if p.independent_segments else ""),
                           (*p.tag_line("#EXT-X-INDEPENDENT-SEGMENTS"), s.extinf), key=s.uri))
    if facts.duration_s is not None:
        out += check_extinf_vs_media(p, s, facts.duration_s, facts.frame_duration_s)
    return out


def check_timestamps(p: MediaPlaylist, before: Segment, previous: SegmentFacts, s: Segment,
                     facts: SegmentFacts) -> list[Finding]:
    """rfc8216bis 4.4.4.1, 6.2.1: with no discontinuity between, a segment starts where
    the one before it started plus its EXTINF."""
    if previous.first_pts_s is None or facts.first_pts_s is None or s.discontinuity:
        return []
    expected = previous.first_pts_s + before.duration
    if abs(facts.first_pts_s - expected) <= _slack(facts.frame_duration_s):
        return []
    return [Finding(Rule.TIMESTAMPS_VS_EXTINF, V, p.url,
                    f"segment {s.msn} starts at media time {facts.first_pts_s:.5f} s; "
                    f"segment {before.msn} started at {previous.first_pts_s:.5f} s with "
                    f"EXTINF {before.duration:g}, so {expected:.5f} s was due",
                    (before.extinf, s.extinf), key=s.uri)]


def check_variant_media(v: Variant, s: Segment, facts: SegmentFacts) -> list[Finding]:
    """rfc8216bis 4.4.6.2: CODECS names every format present, RESOLUTION is what decodes."""
    out: list[Finding] = []
    if v.codecs is not None and facts.codecs:
        problem = codecs_problem([c.strip() for c in v.codecs.split(",")], facts.codecs)
        if problem:
            out.append(Finding(Rule.CODECS_VS_MEDIA, V, v.uri,
                               f"CODECS=\"{v.codecs}\" but segment {s.msn} holds "
                               f"{', '.join(facts.codecs)}: {problem}", (v.line, s.extinf),
                               key=f"{v.codecs}:{facts.codecs}"))
    if v.resolution is not None and facts.width and facts.height and \
            v.resolution != (facts.width, facts.height):
        out.append(Finding(Rule.RESOLUTION_VS_MEDIA, V, v.uri,
                           f"RESOLUTION={v.resolution[0]}x{v.resolution[1]} but segment "
                           f"{s.msn} decodes to {facts.width}x{facts.height}",
                           (v.line, s.extinf), key=f"{facts.width}x{facts.height}"))
    return out


def codecs_problem(declared: list[str], measured: tuple[str, ...]) -> str | None:
    family = {c.split(".")[0]: c for c in declared}
    found = {c.split(".")[0]: c for c in measured}
    if family.keys() != found.keys():
        return f"formats declared {sorted(family)}, present {sorted(found)}"
    avc_declared, avc_found = family.get("avc1", ""), found.get("avc1", "")
    if len(avc_declared) == 11 and len(avc_found) == 11:
        if avc_declared[5:7].lower() != avc_found[5:7].lower():
            return "another H.264 profile"
        if int(avc_declared[9:11], 16) < int(avc_found[9:11], 16):
            return "a lower H.264 level than the stream's"
    aac_declared, aac_found = family.get("mp4a", ""), found.get("mp4a", "")
    if aac_declared.count(".") == 2 and aac_declared != aac_found:
        return "another audio object type"
    return None


# --- BANDWIDTH ------------------------------------------------------------------------


def peak_segment_run(segments: Sequence[tuple[float, int]], target_duration: int
                     ) -> tuple[int, int, int]:
    """rfc8216bis 4.4.6.2: the largest bit rate of any contiguous run of segments
    (duration s, size bytes) lasting 0.5 to 1.5 target durations, as (bit/s, first index,
    last index + 1); (0, 0, 0) where there is no such run."""
    low, high = (f * target_duration for f in PEAK_RUN)
    best = (0, 0, 0)
    for start in range(len(segments)):
        bits, seconds = 0, 0.0
        for stop in range(start, len(segments)):
            duration, size = segments[stop]
            bits += size * 8
            seconds += duration
            if seconds > high + 1e-9:
                break
            if seconds >= low - 1e-9 and math.ceil(bits / seconds) > best[0]:
                best = (math.ceil(bits / seconds), start, stop + 1)
    return best


def peak_segment_bitrate(segments: Iterable[tuple[float, int]], target_duration: int) -> int:
    """The peak segment bit rate of :func:`peak_segment_run` alone (0: no such run)."""
    return peak_segment_run(list(segments), target_duration)[0]


def check_bandwidth(v: Variant, measured_peak_bps: int, *, segments: int = 0,
                    evidence: tuple[Line, ...] = ()) -> list[Finding]:
    """The variant's BANDWIDTH against the peak segment bit rate measured on what it
    served (Apple: the measured peak within 10% of it at most; and not over twice it,
    once ``segments`` >= 3 were measured). ``evidence``: the EXTINF lines of the peak run."""
    if not v.bandwidth or measured_peak_bps <= 0:
        return []
    peak = measured_peak_bps
    if peak > v.bandwidth * (1 + BANDWIDTH_TOLERANCE):
        return [Finding(Rule.BANDWIDTH_BELOW_PEAK, V, v.uri,
                        f"BANDWIDTH={v.bandwidth} but the peak segment bit rate is {peak} "
                        f"bit/s ({peak / v.bandwidth:.0%} of it)", (v.line, *evidence),
                        key="below")]
    if segments >= BANDWIDTH_MIN_SEGMENTS and v.bandwidth > BANDWIDTH_FAR_ABOVE * peak:
        return [Finding(Rule.BANDWIDTH_FAR_ABOVE_PEAK, W, v.uri,
                        f"BANDWIDTH={v.bandwidth} is {v.bandwidth / peak:.1f} x the measured "
                        f"peak {peak} bit/s over {segments} segments", (v.line, *evidence),
                        key="above")]
    return []


def check_served_bandwidth(v: Variant, served: Mapping[int, tuple[Segment, int]],
                           target_duration: int) -> list[Finding]:
    """BANDWIDTH against what was served: ``served`` maps media sequence numbers to the
    segment and its size in bytes; runs never span a media sequence number not served."""
    best: tuple[int, list[Segment]] = (0, [])
    run: list[tuple[Segment, int]] = []
    for msn in sorted(served):
        if run and run[-1][0].msn != msn - 1:
            best = max(best, _peak_of(run, target_duration), key=lambda b: b[0])
            run = []
        run.append(served[msn])
    if run:
        best = max(best, _peak_of(run, target_duration), key=lambda b: b[0])
    peak, segments = best
    return check_bandwidth(v, peak, segments=len(served),
                           evidence=tuple(s.extinf for s in segments))


def _peak_of(run: list[tuple[Segment, int]], target_duration: int
             ) -> tuple[int, list[Segment]]:
    peak, start, stop = peak_segment_run([(s.duration, size) for s, size in run],
                                         target_duration)
    return peak, [s for s, _ in run[start:stop]]
