"""origin.playlist_query: the LL-HLS delivery directives, a pure parser (fuzzed)."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from origin.playlist_query import (
    MAX_DIRECTIVE_DIGITS,
    BadPlaylistQuery,
    PlaylistQuery,
    parse_playlist_query,
)
from tests.origin.feed import LiveFeeder

PLAYLIST = "/hls/demo/360p/index.m3u8"
DIRECTIVES = ("_HLS_msn", "_HLS_part", "_HLS_skip", "ll")
FAST = settings(max_examples=300, deadline=None)


@pytest.mark.parametrize(("params", "expected"), [
    ({}, PlaylistQuery()),
    ({"_HLS_msn": "7"}, PlaylistQuery(msn=7)),
    ({"_HLS_msn": "007", "_HLS_part": "0"}, PlaylistQuery(msn=7, part=0)),
    ({"_HLS_skip": "v2", "ll": "1"}, PlaylistQuery(skip="v2")),
    ({"ll": "0"}, PlaylistQuery(low_latency=False)),
    ({"_HLS_msn": "9" * MAX_DIRECTIVE_DIGITS}, PlaylistQuery(msn=int("9" * 18))),
])
def test_valid_directives(params: dict[str, str], expected: PlaylistQuery) -> None:
    assert parse_playlist_query(params) == expected


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "\uff11", "\U0001d7d9", "1\n",
                                   "+1", "-0", "1_0", " 1", "1e3", "0x1", ""])
def test_only_ascii_decimal_numbers(value: str) -> None:
    # Every one of these is accepted by int() or by str.isdigit().
    with pytest.raises(BadPlaylistQuery, match="non-negative integer"):
        parse_playlist_query({"_HLS_msn": value})


@FAST
@given(st.dictionaries(st.sampled_from(DIRECTIVES + ("other",)), st.text(max_size=24)))
def test_any_query_parses_or_is_a_bad_query(params: dict[str, str]) -> None:
    try:
        query = parse_playlist_query(params)
    except BadPlaylistQuery:
        return
    for name, value in (("_HLS_msn", query.msn), ("_HLS_part", query.part)):
        if value is not None:
            raw = params[name]
            assert raw.isascii() and raw.isdigit() and int(raw) == value
    assert query.part is None or query.msn is not None


@FAST
@given(st.integers(0, 10 ** MAX_DIRECTIVE_DIGITS - 1), st.integers(0, 10 ** 6),
       st.sampled_from([None, "YES", "v2"]))
def test_round_trip(msn: int, part: int, skip: str | None) -> None:
    params = {"_HLS_msn": str(msn), "_HLS_part": str(part)}
    if skip is not None:
        params["_HLS_skip"] = skip
    assert parse_playlist_query(params) == PlaylistQuery(msn=msn, part=part, skip=skip)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(DIRECTIVES), st.text(max_size=12), min_size=1))
async def test_any_query_over_http_is_answered_without_a_server_error(
        client: httpx.AsyncClient, feeder: LiveFeeder, params: dict[str, str]) -> None:
    # The fixtures are shared by the examples. The window is ended, so no directive
    # blocks: each answer is at once a playlist or a 400.
    if feeder.fed == 0:
        await feeder.push_segments(1)
        await feeder.end()
    response = await client.get(PLAYLIST, params=params)
    assert response.status_code in (200, 400), response.text
