"""origin.fastpath: the hot paths answer exactly as the FastAPI routes do."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from castway.live.memory import MemoryLiveState
from origin.fastpath import FastPath
from tests.origin.feed import LiveFeeder

PATHS = [
    "/hls/demo/360p/index.m3u8", "/hls/demo/360p/index.m3u8?_HLS_msn=1&_HLS_part=2",
    "/hls/demo/360p/index.m3u8?_HLS_msn=9", "/hls/demo/360p/index.m3u8?_HLS_part=1",
    "/hls/demo/360p/index.m3u8?ll=0", "/hls/demo/nope/index.m3u8", "/hls/x/360p/index.m3u8",
    "/hls/b/b0001/360p/0.m4s", "/hls/b/b0001/360p/0.1.m4s", "/hls/b/b0001/360p/init.mp4",
    "/hls/b/b0001/360p/..", "/hls/b/b0001/360p/9.m4s", "/hls/b/b0001/360p/.x",
]


def _without_fastpath(app: FastAPI) -> FastAPI:
    app.user_middleware = [m for m in app.user_middleware
                           if getattr(m.cls, "__name__", "") != FastPath.__name__]
    app.middleware_stack = None  # rebuilt on the next request
    return app


async def test_fast_and_routed_answers_are_identical(app: FastAPI, client: httpx.AsyncClient,
                                                     feeder: LiveFeeder) -> None:
    await feeder.push_segments(2)
    fast = {p: await client.get(p) for p in PATHS}
    fast_heads = {p: await client.head(p) for p in PATHS}
    _without_fastpath(app)
    for path in PATHS:
        for method, expected in (("GET", fast[path]), ("HEAD", fast_heads[path])):
            routed = await client.request(method, path)
            assert routed.status_code == expected.status_code, (method, path)
            assert routed.content == expected.content, (method, path)
            assert {k: v for k, v in routed.headers.items() if k != "date"} == \
                {k: v for k, v in expected.headers.items() if k != "date"}, (method, path)


@pytest.mark.parametrize("path", ["/hls/demo/360p/index.m3u8", "/hls/b/b0001/360p/0.m4s"])
async def test_backing_service_errors_are_503(client: httpx.AsyncClient,
                                              live: MemoryLiveState, path: str) -> None:
    await live.close()
    response = await client.get(path)
    assert response.status_code == 503
    assert response.headers["cache-control"] == "no-store"
    assert "retry later" in response.json()["detail"]


async def test_before_the_ladder_has_media_both_ways_in_refuse_alike(
        app: FastAPI, client: httpx.AsyncClient, feeder: LiveFeeder) -> None:
    """The master's rule (nothing before every rendition has media) holds on the fast
    path too, blocking requests included: a short 503 with Retry-After."""
    paths = [p for p in PATHS[:5] if "_HLS_msn" in p or "_HLS" not in p]
    fast = {p: await client.get(p) for p in paths}
    _without_fastpath(app)
    for path in paths:
        routed = await client.get(path)
        assert fast[path].status_code == routed.status_code == 503, path
        assert fast[path].headers["retry-after"] == routed.headers["retry-after"] == "1"
        assert fast[path].headers["cache-control"] == "public, max-age=1"
