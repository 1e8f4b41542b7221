"""origin.pages: the live list, the watch pages and the admin page."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from castway.catalog.sql import SqlCatalog
from castway.live.memory import MemoryLiveState
from castway.model import Broadcast, Channel, Visibility, Vod, VodState
from castway.storage.local import LocalStorage
from origin import pages


async def test_index_lists_live_channels_with_posters(client: httpx.AsyncClient,
                                                      live: MemoryLiveState,
                                                      catalog: SqlCatalog,
                                                      storage: LocalStorage) -> None:
    catalog.create_channel(Channel(name="alpha", title="<b>Alpha</b> & co"))
    await live.put_broadcast(Broadcast(id="ba1", channel="alpha", node_id="n"))
    await live.put_broadcast(Broadcast(id="bb1", channel="beta", node_id="n"))
    storage.put("broadcasts/ba1/poster.jpg", b"\xff\xd8")
    response = await client.get("/")
    assert response.status_code == 200
    html = response.text
    assert "&lt;b&gt;Alpha&lt;/b&gt; &amp; co" in html and "<b>Alpha" not in html
    assert "href='/watch/alpha'" in html and "href='/watch/beta'" in html
    assert "/hls/b/ba1/poster.jpg" in html and "/hls/b/bb1/poster.jpg" not in html


async def test_index_without_live_channels(client: httpx.AsyncClient) -> None:
    assert "Nobody is live" in (await client.get("/")).text


async def test_watch_page_uses_hls_js_in_low_latency_mode(client: httpx.AsyncClient,
                                                          live: MemoryLiveState) -> None:
    await live.put_broadcast(Broadcast(id="ba1", channel="alpha", node_id="n"))
    response = await client.get("/watch/alpha")
    assert response.status_code == 200
    html = response.text
    assert "data-src='/hls/alpha/master.m3u8'" in html
    assert "/static/player.js" in html
    if pages.HLS_JS.exists():
        assert "/static/vendor/hls.min.js" in html and "nohlsjs" not in html
    player = (await client.get("/static/player.js")).text
    assert "lowLatencyMode: true" in player and "hls.latency" in player


async def test_watch_page_without_hls_js_says_so(client: httpx.AsyncClient,
                                                 live: MemoryLiveState,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    monkeypatch.setattr(pages, "HLS_JS", tmp_path / "absent.js")
    await live.put_broadcast(Broadcast(id="ba1", channel="alpha", node_id="n"))
    html = (await client.get("/watch/alpha")).text
    assert "hls.js is not installed" in html and "hls.min.js" not in html


async def test_watch_unknown_or_invalid_channel(client: httpx.AsyncClient,
                                                catalog: SqlCatalog) -> None:
    assert (await client.get("/watch/nobody")).status_code == 404
    assert (await client.get("/watch/%3Cscript%3E")).status_code == 404
    catalog.create_channel(Channel(name="quiet"))
    offline = await client.get("/watch/quiet")
    assert offline.status_code == 200 and "Offline" in offline.text


async def test_watch_vod(client: httpx.AsyncClient, catalog: SqlCatalog) -> None:
    catalog.save_vod(Vod(id="v1", broadcast_id="v1", channel="alpha",
                         visibility=Visibility.PUBLIC, state=VodState.COMPLETE,
                         duration_s=600.0))
    catalog.save_vod(Vod(id="v2", broadcast_id="v2", channel="alpha",
                         visibility=Visibility.PRIVATE, state=VodState.COMPLETE,
                         duration_s=600.0))
    response = await client.get("/watch/vod/v1")
    assert response.status_code == 200
    assert "data-src='/vod/v1/master.m3u8'" in response.text
    assert (await client.get("/watch/vod/v2")).status_code == 404
    assert (await client.get("/watch/vod/nope")).status_code == 404


async def test_admin_page_asks_for_a_token_and_is_not_cached(
        client: httpx.AsyncClient) -> None:
    response = await client.get("/admin")
    assert response.status_code == 200
    assert "id=token" in response.text and "/static/admin.js" in response.text
    assert response.headers["cache-control"] == "no-store"
    script = (await client.get("/static/admin.js")).text
    assert "Authorization" in script and "innerHTML" not in script


def _vod(vod_id: str, channel: str, duration_s: float, *, ended: str,
         visibility: Visibility = Visibility.PUBLIC,
         state: VodState = VodState.COMPLETE) -> Vod:
    return Vod(id=vod_id, broadcast_id=vod_id, channel=channel, visibility=visibility,
               state=state, duration_s=duration_s,
               # This year's date: the pages name the year only for other years.
               created_at=datetime.fromisoformat(ended).replace(year=datetime.now(UTC).year))


async def test_index_and_channel_pages_list_public_vods_readably(
        client: httpx.AsyncClient, catalog: SqlCatalog) -> None:
    catalog.create_channel(Channel(name="mychan"))
    catalog.save_vod(_vod("v1", "mychan", 95.0, ended="2026-12-04T13:15:35+00:00"))
    catalog.save_vod(_vod("v2", "mychan", 30.0, ended="2026-12-04T14:00:00+00:00",
                          visibility=Visibility.PRIVATE))
    catalog.save_vod(_vod("v3", "other", 3725.0, ended="2026-12-04T15:00:00+00:00"))
    index = (await client.get("/")).text
    assert "href='/watch/vod/v1'" in index and "href='/watch/vod/v3'" in index
    assert "href='/watch/vod/v2'" not in index  # private: admin only
    assert "4 Dec 13:14 UTC · 1 min 35 s" in index
    assert "1 h 2 min 5 s" in index
    assert "-12-04T" not in index  # no raw ISO timestamps
    channel = (await client.get("/watch/mychan")).text
    # Offline: the last broadcast is offered, and the notice is the one the player hides.
    assert "id=offline" in channel
    assert ("watch the last broadcast: <a href='/watch/vod/v1'>mychan, 4 Dec 13:14 UTC, "
            "1 min 35 s</a>") in channel
    assert "href='/watch/vod/v3'" not in channel


async def test_vod_page_title_is_readable(client: httpx.AsyncClient,
                                          catalog: SqlCatalog) -> None:
    catalog.save_vod(_vod("v1", "mychan", 95.0, ended="2026-12-04T13:15:35+00:00"))
    html = (await client.get("/watch/vod/v1")).text
    assert "<title>mychan, 4 Dec 13:14 UTC, 1 min 35 s · castway</title>" in html
    assert "2 min" not in html


async def test_favicon_is_served_and_cached(client: httpx.AsyncClient) -> None:
    response = await client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert "max-age=86400" in response.headers["cache-control"]
    assert response.content.startswith(b"<svg")
    assert "href='/favicon.ico'" in (await client.get("/")).text


async def test_admin_links_meet_wcag_aa_contrast() -> None:
    # Links on the page background and on cards: 4.5:1 at least (WCAG 2.x AA, text).
    def luminance(hex_colour: str) -> float:
        channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
                  for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    def contrast(a: str, b: str) -> float:
        high, low = sorted((luminance(a), luminance(b)), reverse=True)
        return (high + 0.05) / (low + 0.05)

    for link in ("#8ab4ff", "#c9a8ff"):
        assert f"{{color:{link}}}" in pages._STYLE
        for background in ("#111111", "#1c1c1c"):
            assert contrast(link, background) >= 4.5
