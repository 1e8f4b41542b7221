"""The LL-HLS delivery directives of a media playlist request (rfc8216bis 6.2.5).

A pure parser: the query parameters in, a ``PlaylistQuery`` or ``BadPlaylistQuery`` out
(the route answers 400 with its message). Numbers are ASCII decimal only: Python's
``int`` also accepts other Unicode digits ('²', '٣') and ``str.isdigit`` says yes to
some that ``int`` refuses, so neither is a validator for peer input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# 18 digits fit a signed 64-bit integer, so the number is safe for every store and
# comparison downstream; a media sequence number never comes near it.
MAX_DIRECTIVE_DIGITS = 18
_NUMBER_RE = re.compile(rf"[0-9]{{1,{MAX_DIRECTIVE_DIGITS}}}")
SKIP_VALUES = frozenset({"YES", "v2"})


class BadPlaylistQuery(ValueError):
    """A malformed delivery directive: the request is a 400."""


@dataclass(frozen=True, slots=True)
class PlaylistQuery:
    msn: int | None = None  # _HLS_msn: block until this segment exists
    part: int | None = None  # _HLS_part: ... and this part of it
    skip: str | None = None  # _HLS_skip: YES or v2, a delta update
    low_latency: bool = True  # ll=0 asks for a plain RFC 8216 playlist


def _number(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if _NUMBER_RE.fullmatch(raw) is None:
        raise BadPlaylistQuery(f"{name} must be a non-negative integer "
                               f"(at most {MAX_DIRECTIVE_DIGITS} ASCII digits)")
    return int(raw)


def parse_playlist_query(params: Mapping[str, str]) -> PlaylistQuery:
    msn = _number(params, "_HLS_msn")
    part = _number(params, "_HLS_part")
    if part is not None and msn is None:
        raise BadPlaylistQuery("_HLS_part requires _HLS_msn")
    skip = params.get("_HLS_skip")
    if skip is not None and skip not in SKIP_VALUES:
        raise BadPlaylistQuery("_HLS_skip must be YES or v2")
    return PlaylistQuery(msn=msn, part=part, skip=skip,
                         low_latency=params.get("ll", "1") != "0")
