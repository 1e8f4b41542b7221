"""The playlist checks many tests run on what castway renders: a thin helper over the
kernel's rules (:mod:`castway.hls.invariants`), which hold every rule once.

``validate_playlist(text)`` lists what one playlist (Multivariant or Media) breaks, empty
when it keeps every rule; ``validate_update(old, new)`` what a reload of a live Media
Playlist breaks against the revision before it (rfc8216bis 6.2.1, 6.2.2).
"""

from __future__ import annotations

from castway.hls.findings import Finding, Rule, Severity
from castway.hls.invariants import (
    check_dated,
    check_media_update,
    check_playlist,
)
from castway.hls.reading import is_multivariant, parse_media

#: SHOULDs castway holds its own playlists to as firmly as the MUSTs.
CASTWAY_HOLDS = frozenset({Rule.PART_HOLD_BACK, Rule.PARTS_VS_EXTINF})


def _broken(findings: list[Finding]) -> list[str]:
    return [str(f) for f in findings
            if f.severity is Severity.VIOLATION or f.rule in CASTWAY_HOLDS]


def validate_playlist(text: str, *, require_pdt: bool = True) -> list[str]:
    """The violations of ``text`` (and the SHOULDs of :data:`CASTWAY_HOLDS`); with
    ``require_pdt`` castway's own rule that every segment is dated, too."""
    findings = check_playlist(text)
    if require_pdt and not is_multivariant(text):
        findings += check_dated(parse_media(text))
    return _broken(findings)


def validate_update(old: str, new: str) -> list[str]:
    return _broken(check_media_update(parse_media(old), parse_media(new)))
