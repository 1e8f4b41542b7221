"""castway.layout: every storage key is built and parsed in one place, and parsing a built
key gives back what built it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from castway.layout import (
    COMPONENT_PATTERN,
    SEGMENT_EXTENSIONS,
    BroadcastFile,
    BroadcastKey,
    InitName,
    MediaName,
    PartName,
    RenditionFile,
    RenditionKey,
    SegmentName,
    StorageKey,
    broadcast_of,
    broadcast_prefix,
    export_key,
    init_generation,
    init_key,
    master_key,
    media_playlist_key,
    parse_key,
    parse_media_name,
    poster_key,
    rendition_key,
    segment_key,
    sprite_key,
    sprite_vtt_key,
    valid_component,
)
from castway.storage.keys import check_key

components = st.from_regex(COMPONENT_PATTERN, fullmatch=True)
numbers = st.integers(min_value=0, max_value=10**12)
extensions = st.sampled_from(sorted(SEGMENT_EXTENSIONS))
media_names = st.one_of(
    st.builds(SegmentName, numbers, extensions),
    st.builds(PartName, numbers, numbers, extensions),
    st.builds(InitName, numbers),
    st.sampled_from(list(RenditionFile)),
)
storage_keys: st.SearchStrategy[StorageKey] = st.one_of(
    st.builds(RenditionKey, components, components, media_names),
    st.builds(BroadcastKey, components, st.sampled_from(list(BroadcastFile))),
)


@settings(max_examples=500, deadline=None)
@given(storage_keys)
def test_parsing_a_built_key_gives_back_what_built_it(key: StorageKey) -> None:
    built = str(key)
    assert parse_key(built) == key
    assert check_key(built) == built  # a key every storage backend accepts
    assert broadcast_of(built) == key.broadcast_id
    assert built.startswith(broadcast_prefix(key.broadcast_id))


@settings(max_examples=300, deadline=None)
@given(media_names)
def test_parsing_a_built_name_gives_back_what_built_it(name: MediaName) -> None:
    assert parse_media_name(str(name)) == name


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8"), max_size=80))
def test_a_key_parses_only_to_the_one_spelling_it_has(text: str) -> None:
    parsed = parse_key(text)
    assert parsed is None or str(parsed) == text


def test_the_layout_as_documented() -> None:
    assert segment_key("b1", "720p", 12, "m4s") == "broadcasts/b1/720p/12.m4s"
    assert segment_key("b1", "720p", 12, "ts") == "broadcasts/b1/720p/12.ts"
    assert init_key("b1", "720p", 0) == "broadcasts/b1/720p/init.mp4"
    assert init_key("b1", "720p", 2) == "broadcasts/b1/720p/init.2.mp4"
    assert media_playlist_key("b1", "720p") == "broadcasts/b1/720p/vod.m3u8"
    assert master_key("b1") == "broadcasts/b1/master.m3u8"
    assert poster_key("b1") == "broadcasts/b1/poster.jpg"
    assert sprite_key("b1") == "broadcasts/b1/thumbs.jpg"
    assert sprite_vtt_key("b1") == "broadcasts/b1/thumbs.vtt"
    assert export_key("b1") == "broadcasts/b1/export.mp4"
    assert broadcast_prefix("b1") == "broadcasts/b1/"
    # castway transcode writes a broadcast's renditions to a directory of its own
    assert rendition_key("", "720p", SegmentName(3)) == "720p/3.m4s"


@pytest.mark.parametrize("key", [
    "broadcasts/b1/720p/012.m4s",       # one spelling per number
    "broadcasts/b1/720p/init.0.mp4",    # generation 0 is init.mp4
    "broadcasts/b1/720p/3.mp4", "broadcasts/b1/720p/-1.m4s", "broadcasts/b1/720p/1.2.3.m4s",
    "broadcasts/b1/720p/index.m3u8", "broadcasts/b1/poster.png", "broadcasts/b1/vod.m3u8",
    "broadcasts/b1/720p/master.m3u8", "broadcasts/b.1/720p/0.m4s", "broadcasts//720p/0.m4s",
    "broadcasts/b1/720p/x/0.m4s", "vods/b1/720p/0.m4s", "broadcasts/b1", "broadcasts/b1/",
    "broadcasts/b1/720p/0.m4s\n", "broadcasts/" + "a" * 65 + "/master.m3u8",
])
def test_keys_outside_the_layout_parse_to_nothing(key: str) -> None:
    assert parse_key(key) is None


@pytest.mark.parametrize(("name", "ok"), [
    ("0.m4s", True), ("12.3.m4s", True), ("init.mp4", True), ("vod.m3u8", True),
    ("..", False), (".hidden", False), ("a..b", False), ("a/b", False), ("", False),
    ("a b", False), ("a\x00b", False), ("trailing.", False),
])
def test_names_inside_a_rendition(name: str, ok: bool) -> None:
    assert (parse_media_name(name) is not None) is ok


@pytest.mark.parametrize(("value", "ok"), [("67a1b2c3d4e5f6a7b8c9", True), ("360p", True),
                                           ("a" * 65, False), ("..", False), ("a.b", False),
                                           ("360p\n", False), ("", False)])
def test_broadcast_ids_and_rendition_names(value: str, ok: bool) -> None:
    assert valid_component(value) is ok


@pytest.mark.parametrize("build", [
    lambda: segment_key("b/1", "720p", 0, "m4s"), lambda: segment_key("b1", "..", 0, "m4s"),
    lambda: segment_key("b1", "720p", -1, "m4s"), lambda: segment_key("b1", "720p", 0, "mp4"),
    lambda: init_key("b1", "720p", -1),
    lambda: master_key(""), lambda: broadcast_prefix("../x"),
])
def test_a_key_that_would_not_parse_back_is_never_built(build: Callable[[], str]) -> None:
    with pytest.raises(ValueError):
        build()


def test_init_generation_of_a_key() -> None:
    assert init_generation(init_key("b", "720p", 0)) == 0
    assert init_generation(init_key("b", "720p", 7)) == 7
    assert init_generation("720p/init.3.mp4") == 3  # a directory written by castway transcode
    assert init_generation(segment_key("b", "720p", 3, "m4s")) is None
    assert init_generation("broadcasts/b/720p/init.x.mp4") is None


def test_the_broadcast_a_key_belongs_to() -> None:
    assert broadcast_of("broadcasts/b1/720p/0.m4s") == "b1"
    assert broadcast_of("broadcasts/b1/anything-else") == "b1"
    assert broadcast_of("broadcasts/b1/") is None
    assert broadcast_of("k") is None
    assert broadcast_of("other/b1/720p/0.m4s") is None
