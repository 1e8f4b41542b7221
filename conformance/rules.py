"""The sans-IO core of ``castway check``: playlists and segment facts in, findings out.

A :class:`Conformance` is fed what a player would see, in the order it saw it: the
Multivariant Playlist (:meth:`~Conformance.master`, on every fetch), each Media Playlist
(:meth:`~Conformance.media`, on every reload) and the facts of each segment it fetched
(:meth:`~Conformance.segment`); :meth:`~Conformance.finish` adds what needs the whole run
(bit-rate peaks). Every call returns the new findings; :attr:`~Conformance.findings` holds
them all, each fault once however many reloads showed it. No I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from conformance.findings import Finding, Line, Rule, Severity
from conformance.playlists import MasterPlaylist, MediaPlaylist, Segment, Variant
from conformance.segments import SegmentFacts

V, W = Severity.VIOLATION, Severity.WARNING

#: rfc8216bis 6.2.2: a live playlist keeps at least this many target durations.
MIN_WINDOW_TARGET_DURATIONS = 3
#: rfc8216bis 4.4.3.8: HOLD-BACK >= 3 x TARGETDURATION.
HOLD_BACK_FACTOR = 3.0
#: rfc8216bis 4.4.3.8: PART-HOLD-BACK MUST be >= 2 x PART-TARGET and SHOULD be >= 3 x.
PART_HOLD_BACK_MUST, PART_HOLD_BACK_SHOULD = 2.0, 3.0
#: Apple's authoring spec: the measured peak bit rate within 10% of BANDWIDTH.
BANDWIDTH_TOLERANCE = 0.10
#: Declared BANDWIDTH this many times the measured peak is "wildly above" it: players
#: then pick a lower variant than the network allows.
BANDWIDTH_FAR_ABOVE = 2.0
#: Segments measured before BANDWIDTH is judged too high (one short segment says little).
BANDWIDTH_MIN_SEGMENTS = 3
#: Slack for durations written with few decimals (EXTINF:2.000 for 2.0005 s of media).
DURATION_SLACK_S = 0.002
#: Parts must add up to their segment within this (they are rounded to 5 decimals).
PARTS_SLACK_S = 0.01


@dataclass
class _Rendition:
    """What the checker remembers of one Media Playlist URL between calls."""

    last: MediaPlaylist | None = None
    seen: dict[int, Segment] = field(default_factory=dict)  # msn -> segment as first listed
    facts: dict[int, SegmentFacts] = field(default_factory=dict)
    bitrates: list[tuple[float, Segment]] = field(default_factory=list)


class Conformance:
    """The rule engine for one stream (a master and its renditions, or one media playlist)."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, str, str], Finding] = {}
        self._master: MasterPlaylist | None = None
        self._renditions: dict[str, _Rendition] = {}

    @property
    def findings(self) -> list[Finding]:
        return list(self._found.values())

    @property
    def has_violation(self) -> bool:
        return any(f.severity is V for f in self._found.values())

    def _keep(self, found: Iterable[Finding]) -> list[Finding]:
        new = []
        for finding in found:
            if finding.identity not in self._found:
                self._found[finding.identity] = finding
                new.append(finding)
        return new

    def unreachable(self, url: str, reason: str) -> list[Finding]:
        """A playlist or segment the stream lists could not be fetched."""
        return self._keep([Finding(Rule.UNREACHABLE, V, url, reason, key=url)])

    # --- the Multivariant Playlist ------------------------------------------------------

    def master(self, playlist: MasterPlaylist) -> list[Finding]:
        previous, self._master = self._master, playlist
        for variant in playlist.variants:
            self._renditions.setdefault(variant.uri, _Rendition())
        if previous is None:
            return []
        return self._keep(_master_reload(previous, playlist))

    def variant_of(self, url: str) -> Variant | None:
        if self._master is None:
            return None
        return next((v for v in self._master.variants if v.uri == url), None)

    # --- Media Playlists ----------------------------------------------------------------

    def media(self, playlist: MediaPlaylist) -> list[Finding]:
        state = self._renditions.setdefault(playlist.url, _Rendition())
        found = list(_media_alone(playlist, self._master))
        if state.last is not None:
            found += _media_reload(state.last, playlist)
        for other_url, other in self._renditions.items():
            if other_url != playlist.url and other.last is not None:
                found += _across_renditions(playlist, other.last)
        state.last = playlist
        for segment in playlist.segments:
            state.seen.setdefault(segment.msn, segment)
        return self._keep(found)

    # --- segments -----------------------------------------------------------------------

    def segment(self, playlist: MediaPlaylist, segment: Segment,
                facts: SegmentFacts) -> list[Finding]:
        state = self._renditions.setdefault(playlist.url, _Rendition())
        state.facts[segment.msn] = facts
        if segment.duration > 0:
            state.bitrates.append((facts.size_bytes * 8 / segment.duration, segment))
        found = list(_segment_alone(playlist, segment, facts))
        previous = state.facts.get(segment.msn - 1)
        before = state.seen.get(segment.msn - 1)
        if previous is not None and before is not None and not segment.discontinuity:
            found += _timestamps(playlist.url, before, previous, segment, facts)
        variant = self.variant_of(playlist.url)
        if variant is not None and facts.error is None:
            found += _variant_vs_media(variant, segment, facts)
        return self._keep(found)

    def finish(self) -> list[Finding]:
        found: list[Finding] = []
        for url, state in self._renditions.items():
            variant = self.variant_of(url)
            if variant is not None and variant.bandwidth and state.bitrates:
                found += _bandwidth(variant, state.bitrates)
        return self._keep(found)


# --- the rules, as pure functions ---------------------------------------------------------

def _master_reload(old: MasterPlaylist, new: MasterPlaylist) -> Iterable[Finding]:
    before = {v.uri: v for v in old.variants}
    after = {v.uri: v for v in new.variants}
    if before.keys() != after.keys():
        gone = [before[u].line for u in before.keys() - after.keys()]
        added = [after[u].line for u in after.keys() - before.keys()]
        yield Finding(Rule.VARIANT_SET_CHANGED, V, new.url,
                      f"the variant set changed between fetches: {len(gone)} gone, "
                      f"{len(added)} added", tuple(gone + added),
                      key=",".join(sorted(before)) + "->" + ",".join(sorted(after)))
    for uri in before.keys() & after.keys():
        a, b = before[uri], after[uri]
        if (a.bandwidth, a.average_bandwidth, a.codecs, a.resolution) != \
                (b.bandwidth, b.average_bandwidth, b.codecs, b.resolution):
            yield Finding(Rule.VARIANT_ATTRIBUTES_CHANGED, W, new.url,
                          f"variant {uri} changed its attributes between fetches "
                          f"(players that fetched the first copy keep the old values)",
                          (a.line, b.line), key=uri)


def _media_alone(p: MediaPlaylist, master: MasterPlaylist | None) -> Iterable[Finding]:
    td = p.target_duration
    if td is not None:
        for s in p.segments:
            if math.floor(s.duration + 0.5) > td:
                yield Finding(Rule.EXTINF_OVER_TARGET, V, p.url,
                              f"EXTINF {s.duration:g} rounds to more than "
                              f"EXT-X-TARGETDURATION {td}",
                              (*p.tag_line("#EXT-X-TARGETDURATION"), s.extinf), key=s.uri)
        hold_back = _float(p.server_control.get("HOLD-BACK"))
        if hold_back is not None and hold_back < HOLD_BACK_FACTOR * td - DURATION_SLACK_S:
            yield Finding(Rule.HOLD_BACK, V, p.url,
                          f"HOLD-BACK {hold_back:g} < 3 x TARGETDURATION ({3 * td})",
                          p.tag_line("#EXT-X-SERVER-CONTROL"), key=str(hold_back))
    dated = [(s.program_date_time, s) for s in p.segments if s.program_date_time is not None]
    for (when_a, a), (when_b, b) in zip(dated, dated[1:], strict=False):
        if when_b <= when_a:
            yield Finding(Rule.PROGRAM_DATE_TIME, V, p.url,
                          f"PROGRAM-DATE-TIME goes back or stands still from segment "
                          f"{a.msn} to {b.msn}", _lines(a.pdt_line, b.pdt_line), key=b.uri)
    if p.is_low_latency:
        yield from _low_latency(p, master)


def _low_latency(p: MediaPlaylist, master: MasterPlaylist | None) -> Iterable[Finding]:
    pt = p.part_target or 0.0
    part_inf = p.tag_line("#EXT-X-PART-INF")
    for part in (*[q for s in p.segments for q in s.parts], *p.live_parts):
        if part.duration > pt + DURATION_SLACK_S:
            yield Finding(Rule.PART_OVER_TARGET, V, p.url,
                          f"part DURATION {part.duration:g} > PART-TARGET {pt:g}",
                          (*part_inf, part.line), key=part.uri)
    for s in p.segments:
        if s.parts and abs(sum(q.duration for q in s.parts) - s.duration) > PARTS_SLACK_S:
            total = sum(q.duration for q in s.parts)
            yield Finding(Rule.PARTS_VS_EXTINF, W, p.url,
                          f"segment {s.msn}'s parts add up to {total:.5f} s, its EXTINF "
                          f"says {s.duration:g}", (s.parts[0].line, s.extinf), key=s.uri)
    if p.ended:
        return
    control = p.tag_line("#EXT-X-SERVER-CONTROL") or (p.last_line,)
    if p.server_control.get("CAN-BLOCK-RELOAD") != "YES":
        yield Finding(Rule.CAN_BLOCK_RELOAD, V, p.url,
                      "a live playlist with EXT-X-PART-INF lacks CAN-BLOCK-RELOAD=YES",
                      control, key="can-block-reload")
    part_hold_back = _float(p.server_control.get("PART-HOLD-BACK"))
    if part_hold_back is None:
        yield Finding(Rule.PART_HOLD_BACK, V, p.url, "EXT-X-PART-INF without PART-HOLD-BACK",
                      control, key="missing")
    elif part_hold_back < PART_HOLD_BACK_MUST * pt - DURATION_SLACK_S:
        yield Finding(Rule.PART_HOLD_BACK, V, p.url,
                      f"PART-HOLD-BACK {part_hold_back:g} < 2 x PART-TARGET {pt:g}",
                      (*control, *part_inf), key=str(part_hold_back))
    elif part_hold_back < PART_HOLD_BACK_SHOULD * pt - DURATION_SLACK_S:
        yield Finding(Rule.PART_HOLD_BACK, W, p.url,
                      f"PART-HOLD-BACK {part_hold_back:g} < 3 x PART-TARGET {pt:g}",
                      (*control, *part_inf), key=str(part_hold_back))
    if not p.preload_hints:
        yield Finding(Rule.PRELOAD_HINT, W, p.url,
                      "a live LL-HLS playlist without EXT-X-PRELOAD-HINT", (p.last_line,),
                      key="missing")
    others = len(master.variants) - 1 if master is not None else 0
    if others > len(p.rendition_reports):
        yield Finding(Rule.RENDITION_REPORT, W, p.url,
                      f"{len(p.rendition_reports)} EXT-X-RENDITION-REPORT for {others} other "
                      f"renditions", p.rendition_reports or (p.last_line,), key="count")


def _media_reload(old: MediaPlaylist, new: MediaPlaylist) -> Iterable[Finding]:
    if old.ended:
        if (old.media_sequence, [(s.uri, s.duration) for s in old.segments]) != \
                (new.media_sequence, [(s.uri, s.duration) for s in new.segments]):
            yield Finding(Rule.ENDED_PLAYLIST_CHANGED, V, new.url,
                          "the playlist changed after EXT-X-ENDLIST",
                          (old.last_line, new.last_line), key="ended")
        return
    if old.target_duration != new.target_duration:
        yield Finding(Rule.TARGET_DURATION_CHANGED, V, new.url,
                      f"EXT-X-TARGETDURATION changed from {old.target_duration} to "
                      f"{new.target_duration} between reloads",
                      (*old.tag_line("#EXT-X-TARGETDURATION"),
                       *new.tag_line("#EXT-X-TARGETDURATION")),
                      key=f"{old.target_duration}->{new.target_duration}")
    if old.part_target != new.part_target and not new.ended:
        yield Finding(Rule.PART_TARGET_CHANGED, V, new.url,
                      f"PART-TARGET changed from {old.part_target} to {new.part_target}",
                      (*old.tag_line("#EXT-X-PART-INF"), *new.tag_line("#EXT-X-PART-INF")),
                      key=f"{old.part_target}->{new.part_target}")
    if old.server_control != new.server_control and not new.ended:
        yield Finding(Rule.SERVER_CONTROL_CHANGED, V, new.url,
                      "EXT-X-SERVER-CONTROL changed between reloads",
                      (*old.tag_line("#EXT-X-SERVER-CONTROL"),
                       *new.tag_line("#EXT-X-SERVER-CONTROL")),
                      key=f"{sorted(old.server_control.items())}->"
                          f"{sorted(new.server_control.items())}")
    yield from _sequences(old, new)


def _sequences(old: MediaPlaylist, new: MediaPlaylist) -> Iterable[Finding]:
    ms_lines = (*old.tag_line("#EXT-X-MEDIA-SEQUENCE"), *new.tag_line("#EXT-X-MEDIA-SEQUENCE"))
    if new.media_sequence < old.media_sequence:
        yield Finding(Rule.MEDIA_SEQUENCE, V, new.url,
                      f"EXT-X-MEDIA-SEQUENCE went back from {old.media_sequence} to "
                      f"{new.media_sequence}", ms_lines,
                      key=f"back:{old.media_sequence}->{new.media_sequence}")
        return
    after = {s.msn: s for s in new.segments}
    for s in old.segments:
        now = after.get(s.msn)
        if now is not None and (now.uri != s.uri or abs(now.duration - s.duration) > 1e-6):
            yield Finding(Rule.MEDIA_SEQUENCE, V, new.url,
                          f"segment {s.msn} is not the same segment on reload",
                          (s.extinf, now.extinf), key=f"changed:{s.msn}")
        if now is not None and s.program_date_time and now.program_date_time and \
                abs((now.program_date_time - s.program_date_time).total_seconds()) > 0.001:
            yield Finding(Rule.PROGRAM_DATE_TIME, V, new.url,
                          f"segment {s.msn}'s PROGRAM-DATE-TIME changed on reload",
                          _lines(s.pdt_line, now.pdt_line), key=f"moved:{s.msn}")
    old_end = old.media_sequence + len(old.segments)
    new_end = new.media_sequence + len(new.segments)
    if new_end < old_end:
        yield Finding(Rule.MEDIA_SEQUENCE, V, new.url,
                      f"segments {new_end}..{old_end - 1} vanished from the end",
                      (old.last_line, new.last_line), key=f"shrank:{old_end}->{new_end}")
    removed = [s for s in old.segments if s.msn < new.media_sequence]
    td = new.target_duration or 0
    if removed and not new.ended and new.duration < MIN_WINDOW_TARGET_DURATIONS * td - 1e-6:
        yield Finding(Rule.SEGMENT_REMOVED_EARLY, V, new.url,
                      f"{len(removed)} segment(s) removed leaving {new.duration:.3f} s, "
                      f"less than 3 x TARGETDURATION ({3 * td} s)",
                      (*ms_lines, new.last_line), key=f"{new.media_sequence}")
    # Where the tag is absent (it then means 0) the media sequences and the removed
    # EXT-X-DISCONTINUITY lines are the evidence.
    dsn_lines = (*(old.tag_line("#EXT-X-DISCONTINUITY-SEQUENCE") or old.tag_line(
                   "#EXT-X-MEDIA-SEQUENCE")),
                 *_lines(*(s.discontinuity_line for s in removed)),
                 *(new.tag_line("#EXT-X-DISCONTINUITY-SEQUENCE") or new.tag_line(
                   "#EXT-X-MEDIA-SEQUENCE")))
    if new.media_sequence <= old_end:  # every removed segment was seen: the count is exact
        expected = old.discontinuity_sequence + sum(s.discontinuity for s in removed)
        if new.discontinuity_sequence != expected:
            yield Finding(Rule.DISCONTINUITY_SEQUENCE, V, new.url,
                          f"EXT-X-DISCONTINUITY-SEQUENCE is {new.discontinuity_sequence}, "
                          f"expected {expected} ({sum(s.discontinuity for s in removed)} "
                          f"discontinuities removed)", dsn_lines,
                          key=f"{new.media_sequence}:{new.discontinuity_sequence}")
    elif new.discontinuity_sequence < old.discontinuity_sequence:
        yield Finding(Rule.DISCONTINUITY_SEQUENCE, V, new.url,
                      "EXT-X-DISCONTINUITY-SEQUENCE went back", dsn_lines,
                      key=f"back:{new.discontinuity_sequence}")


def _across_renditions(p: MediaPlaylist, other: MediaPlaylist) -> Iterable[Finding]:
    """Values fixed for the broadcast must agree between renditions (a player switching
    variants keeps its timing); ended playlists may drop their live-only tags."""
    pair = "|".join(sorted((p.url, other.url)))
    checks: list[tuple[str, object, object, str]] = [
        ("EXT-X-TARGETDURATION", p.target_duration, other.target_duration,
         "#EXT-X-TARGETDURATION"),
        ("PART-TARGET", p.part_target, other.part_target, "#EXT-X-PART-INF")]
    if not p.ended and not other.ended:
        checks.append(("EXT-X-SERVER-CONTROL", p.server_control, other.server_control,
                       "#EXT-X-SERVER-CONTROL"))
    for what, mine, theirs, tag in checks:
        if mine != theirs:
            yield Finding(Rule.DIFFERS_ACROSS_RENDITIONS, V, p.url,
                          f"{what} differs between renditions: {mine} here, {theirs} in "
                          f"{other.url}", (*p.tag_line(tag), *other.tag_line(tag)),
                          key=f"{what}:{pair}")


def _segment_alone(p: MediaPlaylist, s: Segment, facts: SegmentFacts) -> Iterable[Finding]:
    if facts.error is not None:
        yield Finding(Rule.SEGMENT_UNDECODABLE, V, p.url,
                      f"segment {s.msn} does not decode with PyAV: {facts.error}",
                      (s.extinf,), key=s.uri)
    if facts.first_frame_keyframe is False:
        severity = V if p.independent_segments or (s.parts and s.parts[0].independent) else W
        yield Finding(Rule.SEGMENT_STARTS_WITHOUT_KEYFRAME, severity, p.url,
                      f"segment {s.msn} does not start with a keyframe"
                      + (" (the playlist claims EXT-X-INDEPENDENT-SEGMENTS)"
                         if p.independent_segments else ""),
                      (*p.tag_line("#EXT-X-INDEPENDENT-SEGMENTS"), s.extinf), key=s.uri)
    if facts.duration_s is not None:
        slack = (facts.frame_duration_s or 0.0) + DURATION_SLACK_S
        if abs(facts.duration_s - s.duration) > slack:
            yield Finding(Rule.EXTINF_VS_MEDIA, V, p.url,
                          f"segment {s.msn}: EXTINF {s.duration:g} s, its media lasts "
                          f"{facts.duration_s:.5f} s", (s.extinf,), key=s.uri)


def _timestamps(url: str, before: Segment, previous: SegmentFacts, s: Segment,
                facts: SegmentFacts) -> Iterable[Finding]:
    if previous.first_pts_s is None or facts.first_pts_s is None:
        return
    expected = previous.first_pts_s + before.duration
    slack = (facts.frame_duration_s or 0.0) + DURATION_SLACK_S
    if abs(facts.first_pts_s - expected) > slack:
        yield Finding(Rule.TIMESTAMPS_VS_EXTINF, V, url,
                      f"segment {s.msn} starts at media time {facts.first_pts_s:.5f} s; "
                      f"segment {before.msn} started at {previous.first_pts_s:.5f} s with "
                      f"EXTINF {before.duration:g}, so {expected:.5f} s was due",
                      (before.extinf, s.extinf), key=s.uri)


def _variant_vs_media(v: Variant, s: Segment, facts: SegmentFacts) -> Iterable[Finding]:
    if v.codecs is not None and facts.codecs:
        problem = _codecs_problem([c.strip() for c in v.codecs.split(",")], facts.codecs)
        if problem:
            yield Finding(Rule.CODECS_VS_MEDIA, V, v.uri,
                          f"CODECS=\"{v.codecs}\" but segment {s.msn} holds "
                          f"{', '.join(facts.codecs)}: {problem}", (v.line, s.extinf),
                          key=f"{v.codecs}:{facts.codecs}")
    if v.resolution is not None and facts.width and facts.height and \
            tuple(v.resolution) != (facts.width, facts.height):
        yield Finding(Rule.RESOLUTION_VS_MEDIA, V, v.uri,
                      f"RESOLUTION={v.resolution[0]}x{v.resolution[1]} but segment {s.msn} "
                      f"decodes to {facts.width}x{facts.height}", (v.line, s.extinf),
                      key=f"{facts.width}x{facts.height}")


def _codecs_problem(declared: list[str], measured: tuple[str, ...]) -> str | None:
    family = {c.split(".")[0]: c for c in declared}
    found = {c.split(".")[0]: c for c in measured}
    if family.keys() != found.keys():
        return (f"formats declared {sorted(family)}, present {sorted(found)}")
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


def _bandwidth(v: Variant, bitrates: list[tuple[float, Segment]]) -> Iterable[Finding]:
    if not v.bandwidth:
        return
    peak, segment = max(bitrates, key=lambda item: item[0])
    if peak > v.bandwidth * (1 + BANDWIDTH_TOLERANCE):
        yield Finding(Rule.BANDWIDTH_BELOW_PEAK, V, v.uri,
                      f"BANDWIDTH={v.bandwidth} but segment {segment.msn} runs at "
                      f"{peak:.0f} bit/s ({peak / v.bandwidth:.0%} of it)",
                      (v.line, segment.extinf), key="below")
    elif len(bitrates) >= BANDWIDTH_MIN_SEGMENTS and v.bandwidth > BANDWIDTH_FAR_ABOVE * peak:
        yield Finding(Rule.BANDWIDTH_FAR_ABOVE_PEAK, W, v.uri,
                      f"BANDWIDTH={v.bandwidth} is {v.bandwidth / peak:.1f} x the measured "
                      f"peak {peak:.0f} bit/s over {len(bitrates)} segments",
                      (v.line, segment.extinf), key="above")


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _lines(*lines: Line | None) -> tuple[Line, ...]:
    return tuple(line for line in lines if line is not None)
