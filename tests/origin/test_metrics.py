"""origin.metrics: bounded request kinds (never the path: unbounded label cardinality)."""

from __future__ import annotations

import pytest

from origin.metrics import request_kind


@pytest.mark.parametrize(("path", "kind"), [
    ("/hls/demo/master.m3u8", "playlist"),
    ("/hls/demo/360p/index.m3u8", "playlist"),
    ("/vod/v1/360p/vod.m3u8", "playlist"),
    ("/hls/b/b1/360p/init.mp4", "init"),
    ("/hls/b/b1/360p/12.m4s", "media"),
    ("/hls/b/b1/360p/12.3.m4s", "part"),
    ("/hls/b/b1/poster.jpg", "media"),
    ("/api/v1/channels", "api"),
    ("/static/player.js", "static"),
    ("/metrics", "health"),
    ("/watch/demo", "page"),
    ("/anything/else", "page"),
])
def test_request_kind(path: str, kind: str) -> None:
    assert request_kind(path) == kind
