"""origin.edge: metrics, CORS and gzip in one middleware."""

from __future__ import annotations

import gzip

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.origin.feed import LiveFeeder

PLAYLIST = "/hls/demo/360p/index.m3u8"


async def test_small_bodies_are_not_compressed_but_vary(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in response.headers
    assert response.headers["vary"] == "Accept-Encoding"


async def test_compressed_playlist_is_exactly_the_playlist(client: httpx.AsyncClient,
                                                           feeder: LiveFeeder) -> None:
    await feeder.push_segments(4)
    plain = await client.get(PLAYLIST, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    async with client.stream("GET", PLAYLIST, headers={"Accept-Encoding": "gzip"}) as raw:
        compressed = b"".join([chunk async for chunk in raw.aiter_raw()])
        assert raw.headers["content-encoding"] == "gzip"
        assert int(raw.headers["content-length"]) == len(compressed)
        assert raw.headers["etag"] == plain.headers["etag"]
    assert gzip.decompress(compressed) == plain.content
    assert len(compressed) < len(plain.content) / 2


async def test_media_and_ranges_are_never_compressed(client: httpx.AsyncClient,
                                                     feeder: LiveFeeder) -> None:
    await feeder.push_segments(1)
    media = await client.get("/hls/b/b0001/360p/0.m4s", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in media.headers and "vary" not in media.headers
    ranged = await client.get(PLAYLIST, headers={"Accept-Encoding": "gzip",
                                                 "Range": "bytes=0-99"})
    assert ranged.status_code == 206 and "content-encoding" not in ranged.headers


async def test_static_scripts_are_served_whole(client: httpx.AsyncClient) -> None:
    response = await client.get("/static/player.js", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200 and "lowLatencyMode" in response.text


@pytest.mark.parametrize(("method", "headers", "status"), [
    ("GET", "range", 200), ("HEAD", "", 200), ("GET", "range, if-none-match", 200),
    ("POST", "", 400), ("DELETE", "", 400), ("GET", "authorization", 400),
])
async def test_preflight(client: httpx.AsyncClient, registry: CollectorRegistry, method: str,
                         headers: str, status: int) -> None:
    request_headers = {"Origin": "https://player.example",
                       "Access-Control-Request-Method": method}
    if headers:
        request_headers["Access-Control-Request-Headers"] = headers
    response = await client.options("/hls/demo/master.m3u8", headers=request_headers)
    assert response.status_code == status
    assert response.headers["access-control-allow-origin"] == "*"
    assert registry.get_sample_value("castway_origin_requests_total",
                                      {"kind": "playlist", "status": str(status)}) == 1


async def test_no_cors_headers_without_an_origin(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert "access-control-allow-origin" not in response.headers
