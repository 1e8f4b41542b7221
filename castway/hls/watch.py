"""Every rule, revision after revision: what a player reads of one stream, in the order
it read it, checked in every scope.

A :class:`BroadcastWatch` is fed the Multivariant Playlist on every fetch
(:meth:`~BroadcastWatch.read_master`), each Media Playlist on every reload
(:meth:`~BroadcastWatch.read_media`), and the facts of each segment fetched
(:meth:`~BroadcastWatch.read_segment`); :meth:`~BroadcastWatch.finish` adds what needs the
whole run (the BANDWIDTH peaks). Every call returns the new findings; ``findings`` holds
them all, each fault once however many reloads showed it. No I/O, no clock: the tests
feed it castway's playlists as they fetch them, ``castway check`` whatever it follows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from castway.hls.findings import Finding, Rule, Severity
from castway.hls.invariants import (
    check_media,
    check_media_update,
    check_multivariant,
    check_multivariant_update,
    check_renditions,
)
from castway.hls.measured import (
    SegmentFacts,
    check_segment,
    check_served_bandwidth,
    check_timestamps,
    check_variant_media,
)
from castway.hls.reading import (
    MediaPlaylist,
    MultivariantPlaylist,
    Segment,
    Variant,
    parse_media,
    parse_multivariant,
)


@dataclass
class _Rendition:
    """What the watch remembers of one Media Playlist between calls."""

    last: MediaPlaylist | None = None
    seen: dict[int, Segment] = field(default_factory=dict)  # msn -> segment as first listed
    facts: dict[int, SegmentFacts] = field(default_factory=dict)
    served: dict[int, tuple[Segment, int]] = field(default_factory=dict)  # msn -> size


class BroadcastWatch:
    """The rule engine for one stream (a master and its renditions, or one playlist)."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, str, str], Finding] = {}
        self._master: MultivariantPlaylist | None = None
        self._renditions: dict[str, _Rendition] = {}
        self.revisions = 0

    @property
    def findings(self) -> list[Finding]:
        return list(self._found.values())

    @property
    def has_violation(self) -> bool:
        return any(f.severity is Severity.VIOLATION for f in self._found.values())

    @property
    def master(self) -> MultivariantPlaylist | None:
        return self._master

    @property
    def media(self) -> Mapping[str, MediaPlaylist]:
        """The latest revision of each Media Playlist read."""
        return {url: r.last for url, r in self._renditions.items() if r.last is not None}

    def _keep(self, found: Iterable[Finding]) -> list[Finding]:
        new = []
        for finding in found:
            if finding.identity not in self._found:
                self._found[finding.identity] = finding
                new.append(finding)
        return new

    def unreachable(self, url: str, reason: str) -> list[Finding]:
        """A playlist or segment the stream lists could not be fetched (or read)."""
        return self._keep([Finding(Rule.UNREACHABLE, Severity.VIOLATION, url, reason,
                                   key=url)])

    # --- the Multivariant Playlist ------------------------------------------------------

    def read_master(self, playlist: MultivariantPlaylist) -> list[Finding]:
        previous, self._master = self._master, playlist
        self.revisions += 1
        for uri in [*(v.uri for v in playlist.variants), *(a.uri for a in playlist.audio)]:
            self._renditions.setdefault(uri, _Rendition())
        found = check_multivariant(playlist)
        if previous is not None:
            found += check_multivariant_update(previous, playlist)
        return self._keep(found)

    def observe_master(self, text: str, url: str = "") -> list[Finding]:
        return self.read_master(parse_multivariant(text, url))

    def variant_of(self, url: str) -> Variant | None:
        if self._master is None:
            return None
        return next((v for v in self._master.variants if v.uri == url), None)

    # --- Media Playlists ----------------------------------------------------------------

    def read_media(self, playlist: MediaPlaylist) -> list[Finding]:
        state = self._renditions.setdefault(playlist.url, _Rendition())
        self.revisions += 1
        found = check_media(playlist, self._master)
        if state.last is not None:
            found += check_media_update(state.last, playlist)
        found += check_renditions(playlist, self.media.values())
        state.last = playlist
        for segment in playlist.segments:
            state.seen.setdefault(segment.msn, segment)
        return self._keep(found)

    def observe_media(self, name: str, text: str) -> list[Finding]:
        """A Media Playlist's text; ``name`` (its URL, or a rendition's name) names it."""
        return self.read_media(parse_media(text, name))

    # --- segments -----------------------------------------------------------------------

    def read_segment(self, playlist: MediaPlaylist, segment: Segment,
                     facts: SegmentFacts) -> list[Finding]:
        state = self._renditions.setdefault(playlist.url, _Rendition())
        state.facts[segment.msn] = facts
        state.served[segment.msn] = (segment, facts.size_bytes)
        found = check_segment(playlist, segment, facts)
        previous = state.facts.get(segment.msn - 1)
        before = state.seen.get(segment.msn - 1)
        if previous is not None and before is not None:
            found += check_timestamps(playlist, before, previous, segment, facts)
        variant = self.variant_of(playlist.url)
        if variant is not None and facts.error is None:
            found += check_variant_media(variant, segment, facts)
        return self._keep(found)

    def finish(self) -> list[Finding]:
        found: list[Finding] = []
        for url, state in self._renditions.items():
            variant = self.variant_of(url)
            td = state.last.target_duration if state.last is not None else None
            if variant is not None and td and state.served:
                found += check_served_bandwidth(variant, state.served, td)
        return self._keep(found)
