"""The playlist rules, each once: what castway's own playlists are held to on every
revision (tests), and what ``castway check`` holds any server's stream to.

Sans-IO: parsed playlists (:mod:`castway.hls.reading`) in, typed
:class:`~castway.hls.findings.Finding` s out, each naming its rule, severity, the spec
behind it and the playlist lines to blame. Four scopes, as a player meets them:

- one revision of a Media Playlist (:func:`check_media`): the format (rfc8216bis 4.1-4.4,
  EXT-X-VERSION 7), EXTINF rounded <= TARGETDURATION (4.4.3.1), HOLD-BACK and
  CAN-SKIP-UNTIL (4.4.3.8), PROGRAM-DATE-TIME increasing (4.4.4.6), and for LL-HLS parts
  within PART-TARGET that make up their segment (4.4.4.9) and are not kept too long
  (6.2.2), PART-HOLD-BACK, blocking reload, preload hints and rendition reports;
- a reload against the previous revision of the same playlist (:func:`check_media_update`):
  TARGETDURATION, PART-TARGET and EXT-X-SERVER-CONTROL fixed, MEDIA-SEQUENCE never back,
  a media sequence number keeps its segment and date, the discontinuity sequence counts
  the removed discontinuities, no segment removed below three target durations
  (6.2.1, 6.2.2), nothing changes after EXT-X-ENDLIST;
- the renditions side by side (:func:`check_renditions`): the same TARGETDURATION,
  PART-TARGET and server control, and a media sequence number in the same discontinuity
  everywhere;
- the Multivariant Playlist (:func:`check_multivariant`, :func:`check_multivariant_update`).

What needs the media itself (EXTINF against the media, BANDWIDTH against the measured peak,
CODECS, keyframes) is :mod:`castway.hls.measured`; :class:`castway.hls.watch.BroadcastWatch`
runs every scope revision after revision.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from castway.hls.findings import Finding, Line, Rule, Severity
from castway.hls.reading import (
    MediaPlaylist,
    MultivariantPlaylist,
    Segment,
    Variant,
    is_multivariant,
    mixes_kinds,
    parse_media,
    parse_multivariant,
)

V, W = Severity.VIOLATION, Severity.WARNING

#: rfc8216bis 4.4.3.8: HOLD-BACK >= 3 x TARGETDURATION.
HOLD_BACK_TARGET_DURATIONS = 3.0
#: rfc8216bis 4.4.3.8: PART-HOLD-BACK MUST be >= 2 x PART-TARGET and SHOULD be >= 3 x.
PART_HOLD_BACK_MUST, PART_HOLD_BACK_SHOULD = 2.0, 3.0
#: rfc8216bis 4.4.3.8: CAN-SKIP-UNTIL >= 6 x TARGETDURATION.
SKIP_UNTIL_TARGET_DURATIONS = 6.0
#: rfc8216bis 6.2.2: a live playlist keeps at least this many target durations, and lists
#: no part further than this from its end.
MIN_WINDOW_TARGET_DURATIONS = 3.0
#: Values written with few decimals against values computed from them.
TOLERANCE_S = 1e-6
#: Slack for a whole window's duration (EXTINF rounded to 5 decimals, summed).
WINDOW_SLACK_S = 0.002
#: Parts (5 decimals each) add up to their EXTINF within this, per part.
PART_SUM_SLACK_S = 0.002
#: A segment's date may move this little between reloads (milliseconds are written).
PDT_SLACK_S = 0.001


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _lines(*lines: Line | None) -> tuple[Line, ...]:
    return tuple(line for line in lines if line is not None)


# --- one revision ---------------------------------------------------------------------


def check_media(p: MediaPlaylist, master: MultivariantPlaylist | None = None
                ) -> list[Finding]:
    """The rules one revision of a Media Playlist keeps on its own (``master``, when
    known, tells how many rendition reports a live LL-HLS playlist owes)."""
    out = list(p.syntax)
    out += _versions(p)
    td = p.target_duration
    if td is not None:
        for s in p.segments:
            if math.floor(s.duration + 0.5) > td:
                out.append(Finding(Rule.EXTINF_OVER_TARGET, V, p.url,
                                   f"EXTINF {s.duration:g} rounds to more than "
                                   f"EXT-X-TARGETDURATION {td}",
                                   (*p.tag_line("#EXT-X-TARGETDURATION"), s.extinf),
                                   key=s.uri))
        out += _server_control(p, td)
    dated = [s for s in p.segments if s.program_date_time is not None]
    for a, b in zip(dated, dated[1:], strict=False):
        assert a.program_date_time is not None and b.program_date_time is not None
        if b.program_date_time <= a.program_date_time:
            out.append(Finding(Rule.PROGRAM_DATE_TIME, V, p.url,
                               f"PROGRAM-DATE-TIME goes back or stands still from segment "
                               f"{a.msn} to {b.msn}", _lines(a.pdt_line, b.pdt_line),
                               key=b.uri))
    out += _hints_and_reports(p)
    if p.is_low_latency:
        out += _low_latency(p, master)
    return out


def check_dated(p: MediaPlaylist) -> list[Finding]:
    """castway dates every segment (DVR, clocks in sync across renditions)."""
    return [Finding(Rule.PROGRAM_DATE_TIME, V, p.url,
                    f"segment {s.msn} without EXT-X-PROGRAM-DATE-TIME", (s.extinf,),
                    key=f"undated:{s.uri}")
            for s in p.segments if s.program_date_time is None]


def _versions(p: MediaPlaylist) -> Iterable[Finding]:
    version = p.tag_line("#EXT-X-VERSION")
    needs = [(3, "a decimal EXTINF", any(s.decimal_extinf for s in p.segments), ()),
             (6, "EXT-X-MAP", any(s.init_uri for s in p.segments), ()),
             (9, "EXT-X-SKIP", p.skipped > 0 or "#EXT-X-SKIP" in p.tags,
              p.tag_line("#EXT-X-SKIP"))]
    for least, what, used, where in needs:
        if used and p.version < least:
            yield Finding(Rule.VERSION, V, p.url,
                          f"{what} needs EXT-X-VERSION >= {least}, it is {p.version}",
                          (*version, *where), key=what)
    if p.segments and any(s.init_uri for s in p.segments) and p.segments[0].init_uri is None:
        yield Finding(Rule.MAP, V, p.url,
                      "fMP4 playlist: the first segment is not preceded by EXT-X-MAP",
                      (p.segments[0].extinf,), key="first")
    if p.playlist_type == "VOD" and not p.ended:
        yield Finding(Rule.PLAYLIST_TYPE, V, p.url,
                      "EXT-X-PLAYLIST-TYPE:VOD requires EXT-X-ENDLIST",
                      p.tag_line("#EXT-X-PLAYLIST-TYPE"), key="vod")


def _server_control(p: MediaPlaylist, td: int) -> Iterable[Finding]:
    control = p.server_control
    where = p.tag_line("#EXT-X-SERVER-CONTROL")
    hold_back = _float(control.get("HOLD-BACK"))
    if hold_back is not None and hold_back < HOLD_BACK_TARGET_DURATIONS * td - TOLERANCE_S:
        yield Finding(Rule.HOLD_BACK, V, p.url,
                      f"HOLD-BACK {hold_back:g} < 3 x TARGETDURATION ({3 * td})", where,
                      key=str(hold_back))
    skip_until = _float(control.get("CAN-SKIP-UNTIL"))
    if skip_until is not None and \
            skip_until < SKIP_UNTIL_TARGET_DURATIONS * td - TOLERANCE_S:
        yield Finding(Rule.SKIP_UNTIL, V, p.url,
                      f"CAN-SKIP-UNTIL {skip_until:g} < 6 x TARGETDURATION ({6 * td})",
                      where, key=str(skip_until))
    if "#EXT-X-SKIP" in p.tags and skip_until is None:
        yield Finding(Rule.SKIP_UNTIL, V, p.url,
                      "EXT-X-SKIP without SERVER-CONTROL CAN-SKIP-UNTIL",
                      p.tag_line("#EXT-X-SKIP"), key="skip")
    if control.get("CAN-BLOCK-RELOAD") not in (None, "YES"):
        yield Finding(Rule.CAN_BLOCK_RELOAD, V, p.url,
                      "CAN-BLOCK-RELOAD is present but not YES", where, key="value")


def _hints_and_reports(p: MediaPlaylist) -> Iterable[Finding]:
    part_uris = {q.uri for s in p.segments for q in s.parts} | {q.uri for q in p.live_parts}
    for hint in p.preload_hints:
        if p.ended:
            yield Finding(Rule.PRELOAD_HINT, V, p.url,
                          "EXT-X-PRELOAD-HINT in an ended playlist", (hint.line,),
                          key="ended")
        elif hint.type == "PART" and hint.uri in part_uris:
            yield Finding(Rule.PRELOAD_HINT, V, p.url,
                          "the preload hint names a listed part", (hint.line,),
                          key=f"listed:{hint.uri}")
    for report in p.rendition_reports:
        attrs = report.attributes
        if "URI" not in attrs or not attrs.get("LAST-MSN", "").isdigit() or \
                ("LAST-PART" in attrs and not attrs["LAST-PART"].isdigit()):
            yield Finding(Rule.RENDITION_REPORT, V, p.url,
                          "EXT-X-RENDITION-REPORT needs URI and integer LAST-MSN (and "
                          "LAST-PART)", (report.line,), key=report.line.text)


def _low_latency(p: MediaPlaylist, master: MultivariantPlaylist | None) -> Iterable[Finding]:
    pt = p.part_target or 0.0
    part_inf = p.tag_line("#EXT-X-PART-INF")
    for part in (*[q for s in p.segments for q in s.parts], *p.live_parts):
        if part.duration > pt + TOLERANCE_S:
            yield Finding(Rule.PART_OVER_TARGET, V, p.url,
                          f"part DURATION {part.duration:g} > PART-TARGET {pt:g}",
                          (*part_inf, part.line), key=part.uri)
    for s in p.segments:
        total = sum(q.duration for q in s.parts)
        if s.parts and abs(total - s.duration) > PART_SUM_SLACK_S * len(s.parts):
            yield Finding(Rule.PARTS_VS_EXTINF, W, p.url,
                          f"segment {s.msn}'s parts sum to {total:.5f} s, its EXTINF "
                          f"says {s.duration:g}", (s.parts[0].line, s.extinf), key=s.uri)
    yield from _parts_window(p)
    control = p.tag_line("#EXT-X-SERVER-CONTROL") or (p.last_line,)
    part_hold_back = _float(p.server_control.get("PART-HOLD-BACK"))
    if part_hold_back is not None and \
            part_hold_back < PART_HOLD_BACK_MUST * pt - TOLERANCE_S:
        yield Finding(Rule.PART_HOLD_BACK, V, p.url,
                      f"PART-HOLD-BACK {part_hold_back:g} < 2 x PART-TARGET {pt:g}",
                      (*control, *part_inf), key=str(part_hold_back))
    elif part_hold_back is not None and \
            part_hold_back < PART_HOLD_BACK_SHOULD * pt - TOLERANCE_S:
        yield Finding(Rule.PART_HOLD_BACK, W, p.url,
                      f"PART-HOLD-BACK {part_hold_back:g} < 3 x PART-TARGET {pt:g}",
                      (*control, *part_inf), key=str(part_hold_back))
    if p.ended:
        return
    if part_hold_back is None:
        yield Finding(Rule.PART_HOLD_BACK, V, p.url, "EXT-X-PART-INF without PART-HOLD-BACK",
                      control, key="missing")
    if p.server_control.get("CAN-BLOCK-RELOAD") != "YES":
        yield Finding(Rule.CAN_BLOCK_RELOAD, V, p.url,
                      "a live playlist with EXT-X-PART-INF lacks CAN-BLOCK-RELOAD=YES",
                      control, key="can-block-reload")
    if not p.preload_hints:
        yield Finding(Rule.PRELOAD_HINT, W, p.url,
                      "a live LL-HLS playlist without EXT-X-PRELOAD-HINT", (p.last_line,),
                      key="missing")
    others = len(master.variants) - 1 if master is not None else 0
    if others > len(p.rendition_reports):
        yield Finding(Rule.RENDITION_REPORT, W, p.url,
                      f"{len(p.rendition_reports)} EXT-X-RENDITION-REPORT for {others} other "
                      f"renditions", tuple(r.line for r in p.rendition_reports)
                      or (p.last_line,), key="count")


def _parts_window(p: MediaPlaylist) -> Iterable[Finding]:
    """rfc8216bis 6.2.2: parts further than three target durations from the end go."""
    if not p.target_duration:
        return
    from_end = sum(q.duration for q in p.live_parts)
    for s in reversed(p.segments):
        from_end += s.duration
        if s.parts and from_end > MIN_WINDOW_TARGET_DURATIONS * p.target_duration + 1e-3:
            yield Finding(Rule.PARTS_WINDOW, V, p.url,
                          f"segment {s.msn}'s parts are listed more than "
                          f"{MIN_WINDOW_TARGET_DURATIONS:g} target durations from the end",
                          (s.parts[0].line,), key=s.uri)


# --- a reload -------------------------------------------------------------------------


def check_media_update(old: MediaPlaylist, new: MediaPlaylist) -> list[Finding]:
    """The rules a reload keeps against the revision before it (same playlist)."""
    return list(_media_reload(old, new))


def _media_reload(old: MediaPlaylist, new: MediaPlaylist) -> Iterable[Finding]:
    if old.ended:
        if not new.ended or _frozen(old) != _frozen(new):
            yield Finding(Rule.ENDED_PLAYLIST_CHANGED, V, new.url,
                          "the playlist changed after EXT-X-ENDLIST"
                          + ("" if new.ended else " (EXT-X-ENDLIST disappeared)"),
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
    if dict(old.server_control) != dict(new.server_control) and not new.ended:
        yield Finding(Rule.SERVER_CONTROL_CHANGED, V, new.url,
                      "EXT-X-SERVER-CONTROL changed between reloads",
                      (*old.tag_line("#EXT-X-SERVER-CONTROL"),
                       *new.tag_line("#EXT-X-SERVER-CONTROL")),
                      key=f"{sorted(old.server_control.items())}->"
                          f"{sorted(new.server_control.items())}")
    yield from _sequences(old, new)


def _frozen(p: MediaPlaylist) -> tuple[object, ...]:
    return p.target_duration, p.media_sequence, [(s.uri, s.duration) for s in p.segments]


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
        if now is None:
            continue
        if now.uri != s.uri or abs(now.duration - s.duration) > TOLERANCE_S:
            yield Finding(Rule.MEDIA_SEQUENCE, V, new.url,
                          f"segment {s.msn} is not the same segment on reload: it was "
                          f"{s.uri} ({s.duration:g} s)", (s.extinf, now.extinf),
                          key=f"changed:{s.msn}")
        if s.program_date_time and now.program_date_time and \
                abs((now.program_date_time - s.program_date_time).total_seconds()) \
                > PDT_SLACK_S:
            yield Finding(Rule.PROGRAM_DATE_TIME, V, new.url,
                          f"segment {s.msn}'s PROGRAM-DATE-TIME changed on reload",
                          _lines(s.pdt_line, now.pdt_line), key=f"moved:{s.msn}")
    yield from _dated_after(old, new)
    if new.end_msn < old.end_msn:
        yield Finding(Rule.MEDIA_SEQUENCE, V, new.url,
                      f"segments {new.end_msn}..{old.end_msn - 1} vanished from the end",
                      (old.last_line, new.last_line), key=f"shrank:{old.end_msn}->"
                                                          f"{new.end_msn}")
    removed = [s for s in old.segments if s.msn < new.media_sequence]
    td = new.target_duration or 0
    if removed and not new.ended and not new.skipped and \
            new.duration < MIN_WINDOW_TARGET_DURATIONS * td - WINDOW_SLACK_S:
        yield Finding(Rule.SEGMENT_REMOVED_EARLY, V, new.url,
                      f"{len(removed)} segment(s) removed leaving {new.duration:.3f} s, "
                      f"less than 3 x TARGETDURATION ({3 * td} s)",
                      (*ms_lines, new.last_line), key=f"{new.media_sequence}")
    yield from _discontinuities(old, new, removed)


def _dated_after(old: MediaPlaylist, new: MediaPlaylist) -> Iterable[Finding]:
    """A segment new in this revision is not dated before the last one of the previous."""
    if not old.segments or old.segments[-1].program_date_time is None:
        return
    last = old.segments[-1]
    first_new = next((s for s in new.segments if s.msn > last.msn), None)
    if first_new is not None and first_new.program_date_time is not None and \
            last.program_date_time is not None and \
            first_new.program_date_time < last.program_date_time:
        yield Finding(Rule.PROGRAM_DATE_TIME, V, new.url,
                      f"segment {first_new.msn} is dated before segment {last.msn} of the "
                      "previous revision", _lines(last.pdt_line, first_new.pdt_line),
                      key=f"before:{first_new.msn}")


def _discontinuities(old: MediaPlaylist, new: MediaPlaylist,
                     removed: list[Segment]) -> Iterable[Finding]:
    # Where the tag is absent (it then means 0) the media sequences and the removed
    # EXT-X-DISCONTINUITY lines are the evidence.
    dsn_lines = (*(old.tag_line("#EXT-X-DISCONTINUITY-SEQUENCE") or old.tag_line(
                   "#EXT-X-MEDIA-SEQUENCE")),
                 *_lines(*(s.discontinuity_line for s in removed)),
                 *(new.tag_line("#EXT-X-DISCONTINUITY-SEQUENCE") or new.tag_line(
                   "#EXT-X-MEDIA-SEQUENCE")))
    if new.media_sequence <= old.end_msn:  # every removed segment was seen: the count is exact
        expected = old.discontinuity_sequence + sum(s.discontinuity for s in removed)
        if new.discontinuity_sequence != expected:
            yield Finding(Rule.DISCONTINUITY_SEQUENCE, V, new.url,
                          f"EXT-X-DISCONTINUITY-SEQUENCE is {new.discontinuity_sequence}, "
                          f"expected {expected} ({sum(s.discontinuity for s in removed)} "
                          f"discontinuities removed)", dsn_lines,
                          key=f"{new.media_sequence}:{new.discontinuity_sequence}")
            return
    elif new.discontinuity_sequence < old.discontinuity_sequence:
        yield Finding(Rule.DISCONTINUITY_SEQUENCE, V, new.url,
                      "EXT-X-DISCONTINUITY-SEQUENCE went back", dsn_lines,
                      key=f"back:{new.discontinuity_sequence}")
        return
    # The count is right, yet a segment both revisions list moved to another
    # discontinuity (an EXT-X-DISCONTINUITY added or dropped on it): the first is cited.
    before = {s.msn: s for s in old.segments}
    for s in new.segments:
        was = before.get(s.msn)
        if was is not None and was.discontinuity_seq != s.discontinuity_seq:
            yield Finding(Rule.DISCONTINUITY_SEQUENCE, V, new.url,
                          f"segment {s.msn} had discontinuity sequence "
                          f"{was.discontinuity_seq}, now {s.discontinuity_seq}",
                          (was.extinf, s.extinf), key=f"moved:{s.msn}")
            return


# --- renditions side by side ----------------------------------------------------------


def check_renditions(p: MediaPlaylist, others: Iterable[MediaPlaylist]) -> list[Finding]:
    """A rendition against the latest revision of each other one: values fixed for the
    broadcast agree (a player switching variants keeps its timing; ended playlists may
    drop their live-only tags), and a media sequence number is in the same discontinuity
    everywhere (6.2.2: variants aligned)."""
    out: list[Finding] = []
    for other in others:
        if other.url == p.url:
            continue
        pair = "|".join(sorted((p.url, other.url)))
        checks: list[tuple[str, object, object, str]] = [
            ("EXT-X-TARGETDURATION", p.target_duration, other.target_duration,
             "#EXT-X-TARGETDURATION"),
            ("PART-TARGET", p.part_target, other.part_target, "#EXT-X-PART-INF")]
        if not p.ended and not other.ended:
            checks.append(("EXT-X-SERVER-CONTROL", dict(p.server_control),
                           dict(other.server_control), "#EXT-X-SERVER-CONTROL"))
        for what, mine, theirs, tag in checks:
            if mine != theirs:
                out.append(Finding(Rule.DIFFERS_ACROSS_RENDITIONS, V, p.url,
                                   f"{what} differs between renditions: {mine} here, "
                                   f"{theirs} in {other.url}",
                                   (*p.tag_line(tag), *other.tag_line(tag)),
                                   key=f"{what}:{pair}"))
        theirs_by_msn = {s.msn: s for s in other.segments}
        for s in p.segments:
            twin = theirs_by_msn.get(s.msn)
            if twin is not None and twin.discontinuity_seq != s.discontinuity_seq:
                out.append(Finding(Rule.DISCONTINUITY_SEQUENCE, V, p.url,
                                   f"segment {s.msn} has discontinuity sequence "
                                   f"{s.discontinuity_seq}, {twin.discontinuity_seq} in "
                                   f"{other.url}", (s.extinf, twin.extinf),
                                   key=f"renditions:{pair}"))
                break
    return out


# --- the multivariant playlist --------------------------------------------------------


def check_multivariant(m: MultivariantPlaylist) -> list[Finding]:
    out = list(m.syntax)
    if not m.variants:
        out.append(Finding(Rule.VARIANT_ATTRIBUTES, V, m.url, "no EXT-X-STREAM-INF",
                           key="none"))
    for v in m.variants:
        if v.bandwidth is None:
            out.append(Finding(Rule.VARIANT_ATTRIBUTES, V, m.url,
                               f"variant {v.uri}: BANDWIDTH missing", (v.line,),
                               key=f"bandwidth:{v.uri}"))
        if not v.codecs:
            out.append(Finding(Rule.VARIANT_ATTRIBUTES, W, m.url,
                               f"variant {v.uri}: CODECS missing", (v.line,),
                               key=f"codecs:{v.uri}"))
    return out


def _declared(v: Variant) -> tuple[str | None, tuple[int, int] | None, str | None]:
    return v.codecs, v.resolution, v.frame_rate


def check_multivariant_update(old: MultivariantPlaylist,
                              new: MultivariantPlaylist) -> list[Finding]:
    """A master read again lists the same variants, declaring the same things. A
    BANDWIDTH that follows what was measured is a warning of its own (castway's does)."""
    out: list[Finding] = []
    before = {v.uri: v for v in old.variants}
    after = {v.uri: v for v in new.variants}
    if before.keys() != after.keys():
        gone = [before[u].line for u in before.keys() - after.keys()]
        added = [after[u].line for u in after.keys() - before.keys()]
        out.append(Finding(Rule.VARIANT_SET_CHANGED, V, new.url,
                           f"the variant set changed between fetches: {len(gone)} gone, "
                           f"{len(added)} added", tuple(gone + added),
                           key=",".join(sorted(before)) + "->" + ",".join(sorted(after))))
    for uri in sorted(before.keys() & after.keys()):
        a, b = before[uri], after[uri]
        if _declared(a) != _declared(b):
            out.append(Finding(Rule.VARIANT_ATTRIBUTES_CHANGED, W, new.url,
                               f"variant {uri} changed its CODECS, RESOLUTION or FRAME-RATE "
                               f"between fetches (players that fetched the first copy keep "
                               f"the old values)", (a.line, b.line), key=uri))
        if (a.bandwidth, a.average_bandwidth) != (b.bandwidth, b.average_bandwidth):
            out.append(Finding(Rule.VARIANT_BANDWIDTH_CHANGED, W, new.url,
                               f"variant {uri} changed its BANDWIDTH or AVERAGE-BANDWIDTH "
                               f"between fetches", (a.line, b.line), key=uri))
    return out


# --- any playlist's text ----------------------------------------------------------------


def check_playlist(text: str, url: str = "") -> list[Finding]:
    """One playlist's text on its own, whichever kind it is."""
    if mixes_kinds(text):
        return [Finding(Rule.SYNTAX, V, url, "the playlist mixes Multivariant and Media "
                        "Playlist tags", key="mixed")]
    if is_multivariant(text):
        return check_multivariant(parse_multivariant(text, url))
    return check_media(parse_media(text, url))
