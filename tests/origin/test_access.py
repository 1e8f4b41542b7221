"""origin.access: private VODs need a CloudFront-compatible signature (URL or cookies)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import httpx
import pytest
from fastapi import FastAPI

from castway.catalog.sql import SqlCatalog
from castway.live.memory import MemoryLiveState
from castway.model import Visibility, Vod, VodState
from castway.settings import Settings
from castway.signing import generate_private_key_pem
from castway.storage.local import LocalStorage
from origin.access import MediaAccess, MediaAccessCache, resolve_media_access
from tests.origin.conftest import AUTH, TOKEN
from tests.origin.feed import LiveFeeder


@pytest.fixture(scope="module")
def pem() -> str:
    return generate_private_key_pem()


@pytest.fixture
def settings(tmp_path: Path, pem: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", admin_token=TOKEN,
                    public_url="http://origin.test", signing_key=pem,
                    signing_key_id="K2CASTWAYTEST")


@pytest.fixture
def private_vod(catalog: SqlCatalog, storage: LocalStorage) -> str:
    for vod_id in ("v1", "v10"):
        catalog.save_vod(Vod(id=vod_id, broadcast_id=vod_id, channel="demo",
                             visibility=Visibility.PRIVATE, state=VodState.COMPLETE,
                             duration_s=4.0))
        storage.put(f"broadcasts/{vod_id}/master.m3u8",
                    b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n360p/vod.m3u8\n")
        storage.put(f"broadcasts/{vod_id}/360p/0.m4s", b"segment")
    return "v1"


async def test_private_vod_is_refused_without_a_signature(client: httpx.AsyncClient,
                                                          private_vod: str) -> None:
    for path in ("/vod/v1/master.m3u8", "/vod/v1/360p/0.m4s"):
        response = await client.get(path)
        assert response.status_code == 403, path
    assert (await client.get("/watch/vod/v1")).status_code == 404


async def test_a_grant_opens_the_vod_by_url_and_by_cookies(client: httpx.AsyncClient,
                                                           private_vod: str) -> None:
    created = await client.post("/api/v1/vods/v1/grant", headers=AUTH, json={"ttl_s": 600})
    assert created.status_code == 201
    grant = created.json()
    assert grant["expires"] > time.time() + 500
    assert grant["cookie_path"] == "/vod/v1/"
    assert "Key-Pair-Id=K2CASTWAYTEST" in grant["master_url"]

    master = await client.get(grant["master_url"])
    assert master.status_code == 200
    assert master.headers["cache-control"] == "private, max-age=60"

    cookie = "; ".join(f"{name}={value}" for name, value in grant["cookies"].items())
    segment = await client.get("/vod/v1/360p/0.m4s", headers={"Cookie": cookie})
    assert segment.status_code == 200 and segment.content == b"segment"
    assert segment.headers["cache-control"] == "private, max-age=3600"
    beyond = await client.get("/vod/v1/360p/0.m4s",
                              headers={"Cookie": cookie, "Range": "bytes=100-"})
    assert beyond.status_code == 416 and beyond.headers["cache-control"] == "no-store"
    again = await client.get("/vod/v1/360p/0.m4s",
                             headers={"Cookie": cookie, "If-None-Match": segment.headers["etag"]})
    assert again.status_code == 304
    assert again.headers["cache-control"] == "private, max-age=3600"


async def test_the_signed_watch_page_sets_the_cookies_for_the_player(
        app: FastAPI, private_vod: str) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://origin.test") as c:
        grant = (await c.post("/api/v1/vods/v1/grant", headers=AUTH, json={})).json()
        page = await c.get(grant["watch_url"])
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-store"
        set_cookies = page.headers.get_list("set-cookie")
        assert {h.split("=", 1)[0] for h in set_cookies} == {
            "CloudFront-Policy", "CloudFront-Signature", "CloudFront-Key-Pair-Id"}
        assert all("Path=/vod/v1/" in h and "HttpOnly" in h for h in set_cookies)
        # The player's requests now carry them (the client's cookie jar, like a browser).
        assert (await c.get("/vod/v1/master.m3u8")).status_code == 200
        assert (await c.get("/vod/v1/360p/0.m4s")).status_code == 200
        assert (await c.get("/vod/v10/360p/0.m4s")).status_code == 403  # not this one


async def test_expired_tampered_or_foreign_signatures_are_refused(
        client: httpx.AsyncClient, app: FastAPI, private_vod: str) -> None:
    access = app.state.origin.access
    expired = access.grant("v1", 60, now=time.time() - 3600)
    assert (await client.get(expired.master_url)).status_code == 403
    fresh = access.grant("v1", 600)
    tampered = fresh.master_url.replace("Signature=", "Signature=AAAA")
    assert (await client.get(tampered)).status_code == 403
    other = fresh.master_url.replace("/vod/v1/", "/vod/v10/")
    assert (await client.get(other)).status_code == 403
    foreign = access.grant("v1", 600)
    other_key = generate_private_key_pem()
    from castway.signing import SigningKey, sign_url

    forged = sign_url("http://origin.test/vod/v1/master.m3u8",
                      SigningKey.from_pem(other_key, "K2CASTWAYTEST"),
                      expires=foreign.expires, resource="http://origin.test/vod/v1/*")
    assert (await client.get(forged)).status_code == 403


async def test_public_vods_need_no_signature(client: httpx.AsyncClient, catalog: SqlCatalog,
                                             storage: LocalStorage) -> None:
    catalog.save_vod(Vod(id="pub", broadcast_id="pub", channel="demo",
                         visibility=Visibility.PUBLIC, state=VodState.COMPLETE,
                         duration_s=4.0))
    storage.put("broadcasts/pub/master.m3u8", b"#EXTM3U\n")
    response = await client.get("/vod/pub/master.m3u8")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=60"


# --- every route to a private VOD's bytes ---------------------------------------------------

SECRET_ID = "p1"
SECRET_CHANNEL = "secret"
# Every object of the broadcast, in storage (and the last part also in the live state's
# recent window, as it is for a while after the end), each with its own bytes.
SECRET_KEYS = ("master.m3u8", "360p/vod.m3u8", "360p/init.mp4", "360p/0.m4s",
               "360p/1.0.m4s", "poster.jpg", "thumbs.jpg", "thumbs.vtt", "export.mp4")
SECRET_NAMES = sorted({key.rsplit("/", 1)[-1] for key in SECRET_KEYS})


def _secret(key: str) -> bytes:
    return f"SECRET<{SECRET_ID}/{key}>".encode()


# What each path parameter of a route may name to reach the broadcast's bytes. A route
# with a parameter not listed here fails the test until it is listed.
PARAM_VALUES: dict[str, tuple[str, ...]] = {
    "broadcast_id": (SECRET_ID,),
    "vod_id": (SECRET_ID,),
    "rendition": ("360p",),
    "name": tuple(SECRET_NAMES),
    "channel": (SECRET_CHANNEL, "b"),
    "message_id": ("1",),
    "webhook_id": ("1",),
    "msg_id": ("1",),
    "path": tuple(SECRET_NAMES),  # a Mount's remainder
}
MEDIA = "media"  # serves a broadcast's bytes: must refuse a private ended one unsigned
# Every route of the app, classified. A new route fails the test until it is classified
# here: if it can serve a broadcast's bytes, it is MEDIA and must pass the refusal check.
ROUTE_KINDS: dict[str, str] = {
    "/hls/b/{broadcast_id}/{rendition}/{name}": MEDIA,
    "/hls/b/{broadcast_id}/{name}": MEDIA,
    "/hls/{channel}/b/{broadcast_id}/{rendition}/{name}": MEDIA,
    "/vod/{vod_id}/master.m3u8": MEDIA,
    "/vod/{vod_id}/export.mp4": MEDIA,
    "/vod/{vod_id}/{rendition}/{name}": MEDIA,
    "/watch/vod/{vod_id}": MEDIA,  # the page of a VOD: its existence is private too
    # the channel's live broadcast only (a private channel's: test_private_live_channel)
    "/hls/{channel}/master.m3u8": "live playlist",
    "/hls/{channel}/{rendition}/index.m3u8": "live playlist",
    "/hls/{channel}/{rendition}/dvr.m3u8": "live playlist",
    "/watch/{channel}": "page of the live channel",
    "/": "page: live broadcasts",
    "/admin": "page: no data",
    "/favicon.ico": "package file",
    "/static": "package files",
    "/chat/static/{name}": "package files",
    "/chat/{channel}": "websocket: chat messages",
    "/openapi.json": "schema", "/docs": "schema", "/docs/oauth2-redirect": "schema",
    "/healthz": "health", "/readyz": "health", "/metrics": "health",
}
API_PREFIX = "/api/v1/"  # the control API: bearer token (checked below: 401 unsigned)


def _routes(app: FastAPI) -> list[tuple[str, frozenset[str]]]:
    """(path template, methods) of every route, included routers and mounts walked."""
    from fastapi.routing import iter_route_contexts
    from starlette.routing import Mount

    routes: list[tuple[str, frozenset[str]]] = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, Mount):
            routes.append((route.path, frozenset({"GET", "HEAD"})))
        elif context.path is not None:
            routes.append((context.path, frozenset(context.methods or {"WEBSOCKET"})))
    return routes


def _urls(template: str) -> list[str]:
    """Every concrete URL of ``template`` with the values of PARAM_VALUES."""
    import itertools
    import re

    names = re.findall(r"{(\w+)(?::\w+)?}", template)
    unknown = [n for n in names if n not in PARAM_VALUES]
    assert not unknown, f"{template}: add values for {unknown} to PARAM_VALUES"
    urls = []
    for values in itertools.product(*(PARAM_VALUES[n] for n in names)):
        url = template
        for name, value in zip(names, values, strict=True):
            url = re.sub(rf"{{{name}(?::\w+)?}}", value, url, count=1)
        urls.append(url)
    return urls


@pytest.fixture(params=["vod-private", "vod-being-made", "live-state-forgotten"])
async def ended_private(request: pytest.FixtureRequest, catalog: SqlCatalog,
                        live: MemoryLiveState, storage: LocalStorage) -> str:
    """A broadcast that has ended on a channel whose VODs are private: with its private
    VOD, before the archiver has made the VOD, or after the live state forgot it."""
    from castway.model import Broadcast, BroadcastState, Channel

    catalog.create_channel(Channel(name=SECRET_CHANNEL, vod_visibility=Visibility.PRIVATE))
    ended = Broadcast(id=SECRET_ID, channel=SECRET_CHANNEL, node_id="node-1",
                      state=BroadcastState.ENDED)
    catalog.save_broadcast(ended)
    if request.param != "live-state-forgotten":
        await live.put_broadcast(ended)
    if request.param != "vod-being-made":
        catalog.save_vod(Vod(id=SECRET_ID, broadcast_id=SECRET_ID, channel=SECRET_CHANNEL,
                             visibility=Visibility.PRIVATE, state=VodState.COMPLETE,
                             duration_s=4.0))
    for key in SECRET_KEYS:
        storage.put(f"broadcasts/{SECRET_ID}/{key}", _secret(key))
    await live.put_media(f"broadcasts/{SECRET_ID}/360p/1.0.m4s", _secret("360p/1.0.m4s"),
                         60.0)
    return SECRET_ID


@pytest.fixture
async def routes_only(settings: Settings, catalog: SqlCatalog, live: MemoryLiveState,
                      storage: LocalStorage) -> AsyncIterator[FastAPI]:
    """The same app without its fast path: FastAPI's routes answer every request."""
    from prometheus_client import CollectorRegistry

    from launch.http_app import create_platform_app
    from origin.fastpath import FastPath

    app = create_platform_app(settings, catalog=catalog, live=live, storage=storage,
                              registry=CollectorRegistry())
    app.user_middleware = [m for m in app.user_middleware
                           if m.cls is not cast(object, FastPath)]
    try:
        yield app
    finally:
        await app.state.origin.notifier.close()


# Other spellings of a media URL that a server may resolve to the same object.
SPELLINGS = ("/hls/b/%70%31/360p/0.m4s", f"/hls/b/{SECRET_ID}/360p/%30.m4s",
             f"//hls/b/{SECRET_ID}/360p/0.m4s", f"/hls//b/{SECRET_ID}/360p/0.m4s",
             f"/hls/b/{SECRET_ID}/360p/0.m4s/", f"/hls/b/{SECRET_ID}//360p/0.m4s",
             f"/hls/b/{SECRET_ID.upper()}/360p/0.m4s", "/vod/%70%31/360p/0.m4s",
             f"/hls/b/{SECRET_ID}/poster%2Ejpg", f"/hls/b/{SECRET_ID}/360p/0.m4s?ll=0")


async def test_no_route_serves_a_private_ended_broadcast_unsigned(
        app: FastAPI, server: str, routes_only: FastAPI, ended_private: str) -> None:
    from origin import fastpath

    routes = _routes(app)
    unclassified = sorted({path for path, _ in routes if path not in ROUTE_KINDS
                           and not path.startswith(API_PREFIX)})
    assert not unclassified, f"classify these routes in ROUTE_KINDS: {unclassified}"
    checked: list[str] = []
    secrets = [_secret(key) for key in SECRET_KEYS]
    assert len(routes_only.user_middleware) == len(app.user_middleware) - 1
    # The full app (fast path first) and the routes alone, in process; the full app over
    # a real socket (uvicorn's URL decoding) for the media routes and other spellings.
    clients = ((httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                  base_url="http://origin.test"), False),
               (httpx.AsyncClient(transport=httpx.ASGITransport(app=routes_only),
                                  base_url="http://origin.test"), False),
               (httpx.AsyncClient(base_url=server), True))
    for client, media_only in clients:
        async with client as c:
            for template, methods in routes:
                if "GET" not in methods and "HEAD" not in methods:
                    continue  # websockets, and API writes (bearer token, JSON in)
                base = template if template != "/static" else "/static/{path}"
                media = ROUTE_KINDS.get(template) == MEDIA
                if media_only and not media:
                    continue
                for url in _urls(base):
                    # HEAD answers like GET without the body: it matters where bytes do.
                    for method in sorted(methods & ({"GET", "HEAD"} if media else {"GET"})):
                        response = await c.request(method, url)
                        leaked = [s for s in secrets if s in response.content]
                        assert not leaked, f"{method} {url}: {response.status_code}"
                        if media:
                            assert response.status_code in (403, 404), \
                                f"{method} {url}: {response.status_code}"
                        elif template.startswith(API_PREFIX):
                            assert response.status_code == 401, f"{method} {url}"
                        checked.append(url)
            for url in SPELLINGS:
                for method in ("GET", "HEAD"):
                    response = await c.request(method, url)
                    assert response.status_code in (307, 403, 404), f"{method} {url}"
                    assert not [s for s in secrets if s in response.content], url
    # Every object was asked for on every media route that can name it.
    for key in SECRET_KEYS:
        name = key.rsplit("/", 1)[-1]
        assert any(url.startswith(f"/hls/b/{SECRET_ID}/") and url.endswith(f"/{name}")
                   for url in checked), key
    # The fast path's patterns only take URLs of media routes checked above.
    for pattern, _handler in fastpath.ROUTES:
        matched = [url for url in checked if pattern.match(url)]
        assert matched, f"fastpath pattern {pattern.pattern} matches no checked URL"


@pytest.mark.parametrize("ended_private", ["vod-private"], indirect=True)
async def test_a_vod_signature_does_not_open_the_broadcast_route(
        client: httpx.AsyncClient, app: FastAPI, ended_private: str) -> None:
    """A grant names /vod/{id}/* (the resource CloudFront checks): it opens that route
    only, and the /hls/b refusal tells the player where to go."""
    grant = app.state.origin.access.grant(SECRET_ID, 600)
    query = grant.master_url.split("?", 1)[1]
    cookie = "; ".join(f"{name}={value}" for name, value in grant.cookies.items())
    for headers in ({}, {"Cookie": cookie}):
        refused = await client.get(f"/hls/b/{SECRET_ID}/360p/0.m4s?{query}", headers=headers)
        assert refused.status_code == 403
        assert f"/vod/{SECRET_ID}/master.m3u8" in refused.json()["detail"]
    signed = await client.get(f"/vod/{SECRET_ID}/360p/0.m4s?{query}")
    assert signed.status_code == 200 and signed.content == _secret("360p/0.m4s")
    assert signed.headers["cache-control"] == "private, max-age=3600"


async def test_live_media_is_public_until_the_broadcast_ends_with_a_private_vod(
        client: httpx.AsyncClient, catalog: SqlCatalog, live: MemoryLiveState,
        feeder: LiveFeeder) -> None:
    from castway.model import BroadcastState, Channel

    catalog.create_channel(Channel(name=feeder.channel, vod_visibility=Visibility.PRIVATE))
    await feeder.push_segments(1)
    url = f"/hls/b/{feeder.broadcast_id}/{feeder.rendition}/0.m4s"
    response = await client.get(url)
    assert response.status_code == 200
    # Public while live, but a CDN keeps it only briefly: once the broadcast ends the
    # same URL is refused, and a year-long cached copy would outlive the refusal.
    assert response.headers["cache-control"] == "public, max-age=10"
    poster = await client.get(f"/hls/b/{feeder.broadcast_id}/poster.jpg")
    assert poster.status_code == 404  # none yet; refused or not, never served
    await live.update_broadcast(feeder.broadcast_id, state=BroadcastState.ENDED)
    await feeder.end()
    deadline = time.monotonic() + 5.0
    while (response := await client.get(url)).status_code == 200:
        # the origin re-reads a broadcast's state at most once a second
        assert time.monotonic() < deadline, "still served after the end"
        await asyncio.sleep(0.05)
    assert response.status_code == 403
    assert response.content != feeder.clip.parts[0]


async def test_live_media_of_a_public_vod_channel_stays_immutable(
        client: httpx.AsyncClient, catalog: SqlCatalog, live: MemoryLiveState,
        storage: LocalStorage, feeder: LiveFeeder) -> None:
    from castway.model import Broadcast, BroadcastState, Channel

    catalog.create_channel(Channel(name=feeder.channel, vod_visibility=Visibility.PUBLIC))
    await feeder.push_segments(1)
    url = f"/hls/b/{feeder.broadcast_id}/{feeder.rendition}/0.m4s"
    live_answer = await client.get(url)
    assert live_answer.headers["cache-control"] == "public, max-age=31536000, immutable"
    # Ended, public VOD: the broadcast URLs stay valid for ever (live players finishing).
    catalog.save_broadcast(Broadcast(id="done1", channel=feeder.channel, node_id="n",
                                     state=BroadcastState.ENDED))
    storage.put("broadcasts/done1/360p/3.m4s", b"archived")
    storage.put("broadcasts/done1/poster.jpg", b"\xff\xd8jpeg")
    archived = await client.get("/hls/b/done1/360p/3.m4s")
    assert archived.status_code == 200 and archived.content == b"archived"
    assert archived.headers["cache-control"] == "public, max-age=31536000, immutable"
    poster = await client.get("/hls/b/done1/poster.jpg")
    assert poster.status_code == 200 and poster.headers["cache-control"] == \
        "public, max-age=30"


async def test_media_of_an_unknown_broadcast_or_a_deleted_vod_is_not_served(
        client: httpx.AsyncClient, catalog: SqlCatalog, storage: LocalStorage) -> None:
    # No record says whether its VOD is public: refused, as a private one would be.
    catalog.save_vod(Vod(id="gone1", broadcast_id="gone1", channel="demo",
                         visibility=Visibility.PUBLIC, state=VodState.DELETED,
                         duration_s=4.0))
    for broadcast_id in ("orphan1", "gone1"):
        storage.put(f"broadcasts/{broadcast_id}/360p/0.m4s", b"orphan bytes")
        storage.put(f"broadcasts/{broadcast_id}/poster.jpg", b"\xff\xd8jpeg")
        for url in (f"/hls/b/{broadcast_id}/360p/0.m4s", f"/hls/b/{broadcast_id}/poster.jpg"):
            response = await client.get(url)
            assert response.status_code == 404, url


@pytest.mark.parametrize(("live_state", "recorded", "vod", "channel", "expected"), [
    # live: the live state decides, the channel's VOD visibility sets the CDN lifetime
    ("live", "live", None, "public", MediaAccess.LIVE),
    ("live", "live", None, "private-live", MediaAccess.LIVE_PRIVATE),
    ("live", "live", None, None, MediaAccess.LIVE),
    ("live", "live", None, "private", MediaAccess.LIVE_PRIVATE_VOD),
    # ended: the VOD, else the channel (what the archiver will give the VOD)
    ("ended", "ended", "private", "public", MediaAccess.PRIVATE),
    ("ended", "ended", "public", "private", MediaAccess.PUBLIC),
    ("ended", "ended", None, "private", MediaAccess.PRIVATE),
    ("ended", "ended", None, "public", MediaAccess.PUBLIC),
    ("ended", "ended", None, "private-live", MediaAccess.PRIVATE),
    ("ended", "ended", None, None, MediaAccess.PUBLIC),
    ("failed", "failed", None, "private", MediaAccess.PRIVATE),
    (None, "ended", "private", "private", MediaAccess.PRIVATE),
    (None, "ended", "deleted", "public", MediaAccess.UNKNOWN),
    # 'live' in the catalog only (its node was killed, or Redis restarted empty): not
    # live for the rule, so a private channel's media is not left open
    (None, "live", None, "private", MediaAccess.PRIVATE),
    (None, None, None, "public", MediaAccess.UNKNOWN),
])
async def test_media_access_rule(catalog: SqlCatalog, live: MemoryLiveState,
                                 live_state: str | None, recorded: str | None,
                                 vod: str | None, channel: str | None,
                                 expected: MediaAccess) -> None:
    from castway.model import Broadcast, BroadcastState, Channel

    if channel == "private-live":
        catalog.create_channel(Channel(name="ch", live_visibility=Visibility.PRIVATE))
    elif channel is not None:
        catalog.create_channel(Channel(name="ch", vod_visibility=Visibility(channel)))
    if recorded is not None:
        catalog.save_broadcast(Broadcast(id="x1", channel="ch", node_id="n",
                                         state=BroadcastState(recorded)))
    if live_state is not None:
        await live.put_broadcast(Broadcast(id="x1", channel="ch", node_id="n",
                                           state=BroadcastState(live_state)))
    if vod is not None:
        catalog.save_vod(Vod(
            id="x1", broadcast_id="x1", channel="ch",
            visibility=Visibility.PRIVATE if vod == "private" else Visibility.PUBLIC,
            state=VodState.DELETED if vod == "deleted" else VodState.COMPLETE,
            duration_s=1.0))
    assert await resolve_media_access(live, catalog, "x1") is expected
    assert (await MediaAccessCache(live, catalog).get("x1")) is expected


# --- private live channels ----------------------------------------------------------------

# Every route that serves a live broadcast's bytes, for a private channel: the live
# playlists, the media under the channel's path (where its playlists point) and under
# /hls/b/, the poster, and the watch page.
def _live_urls(feeder: LiveFeeder) -> dict[str, str]:
    c, b, r = feeder.channel, feeder.broadcast_id, feeder.rendition
    return {
        "master": f"/hls/{c}/master.m3u8",
        "media playlist": f"/hls/{c}/{r}/index.m3u8",
        "blocking reload": f"/hls/{c}/{r}/index.m3u8?_HLS_msn=0&_HLS_part=0",
        "dvr": f"/hls/{c}/{r}/dvr.m3u8",
        "init": f"/hls/{c}/b/{b}/{r}/init.mp4",
        "segment": f"/hls/{c}/b/{b}/{r}/0.m4s",
        "part": f"/hls/{c}/b/{b}/{r}/1.0.m4s",
        "init by broadcast": f"/hls/b/{b}/{r}/init.mp4",
        "segment by broadcast": f"/hls/b/{b}/{r}/0.m4s",
        "part by broadcast": f"/hls/b/{b}/{r}/1.0.m4s",
    }


@pytest.fixture
async def private_live(catalog: SqlCatalog, feeder: LiveFeeder) -> LiveFeeder:
    """A live broadcast on a private channel: one segment, and a part of the next."""
    from castway.model import Channel

    catalog.create_channel(Channel(name=feeder.channel, live_visibility=Visibility.PRIVATE))
    await feeder.push_segments(1)
    await feeder.push_part()
    return feeder


async def test_private_live_channel_refuses_every_route_unsigned(
        app: FastAPI, server: str, routes_only: FastAPI, private_live: LiveFeeder) -> None:
    feeder = private_live
    for base, over_socket in ((None, False), (None, True)):
        del base
        transports = ([httpx.AsyncClient(base_url=server)] if over_socket else
                      [httpx.AsyncClient(transport=httpx.ASGITransport(app=a),
                                         base_url="http://origin.test")
                       for a in (app, routes_only)])
        for client in transports:
            async with client as c:
                for what, url in _live_urls(feeder).items():
                    for method in ("GET", "HEAD"):
                        response = await c.request(method, url)
                        assert response.status_code == 403, f"{what}: {method} {url}"
                        assert feeder.clip.parts[0] not in response.content
                assert (await c.get(f"/watch/{feeder.channel}")).status_code == 404
                assert (await c.get(f"/hls/b/{feeder.broadcast_id}/poster.jpg")
                        ).status_code == 403
                assert feeder.broadcast_id not in (await c.get("/")).text


async def test_a_channel_grant_opens_live_playlists_and_media_by_url_and_by_cookies(
        client: httpx.AsyncClient, private_live: LiveFeeder) -> None:
    feeder = private_live
    created = await client.post(f"/api/v1/channels/{feeder.channel}/grant", headers=AUTH,
                                json={"ttl_s": 600})
    assert created.status_code == 201
    grant = created.json()
    assert grant["cookie_path"] == f"/hls/{feeder.channel}/"
    query = grant["master_url"].split("?", 1)[1]
    cookie = "; ".join(f"{name}={value}" for name, value in grant["cookies"].items())
    for what, url in _live_urls(feeder).items():
        signed = url + ("&" if "?" in url else "?") + query
        by_url = await client.get(signed)
        assert by_url.status_code == 200, f"{what} by URL: {by_url.text}"
        assert by_url.headers["cache-control"].startswith("private"), what
        if "by broadcast" in what:
            continue  # a browser sends the channel's cookies under /hls/{channel}/ only
        by_cookie = await client.get(url, headers={"Cookie": cookie})
        assert by_cookie.status_code == 200, f"{what} by cookies"
    # The playlists point at the media under the channel's path, which the cookies cover.
    playlist = (await client.get(f"/hls/{feeder.channel}/{feeder.rendition}/index.m3u8",
                                 headers={"Cookie": cookie})).text
    assert f"../b/{feeder.broadcast_id}/{feeder.rendition}/0.m4s" in playlist
    assert "/hls/b/" not in playlist and "../../b/" not in playlist
    segment = await client.get(f"/hls/{feeder.channel}/b/{feeder.broadcast_id}/"
                               f"{feeder.rendition}/0.m4s", headers={"Cookie": cookie})
    assert segment.status_code == 200 and segment.content.startswith(feeder.clip.parts[0])
    # Not another channel's: the grant names /hls/{channel}/* only.
    other = await client.get(f"/hls/other/b/{feeder.broadcast_id}/{feeder.rendition}/0.m4s"
                             f"?{query}")
    assert other.status_code in (403, 404)


async def test_channel_grants_expire_and_cannot_be_forged(
        client: httpx.AsyncClient, app: FastAPI, private_live: LiveFeeder) -> None:
    feeder = private_live
    access = app.state.origin.access
    expired = access.channel_grant(feeder.channel, 60, now=time.time() - 3600)
    assert (await client.get(expired.master_url)).status_code == 403
    cookie = "; ".join(f"{k}={v}" for k, v in expired.cookies.items())
    assert (await client.get(_live_urls(feeder)["segment"],
                             headers={"Cookie": cookie})).status_code == 403
    fresh = access.channel_grant(feeder.channel, 600)
    assert (await client.get(fresh.master_url)).status_code == 200
    tampered = fresh.master_url.replace("Signature=", "Signature=AAAA")
    assert (await client.get(tampered)).status_code == 403
    vod_grant = access.grant(feeder.broadcast_id, 600)  # a VOD's grant is not the channel's
    query = vod_grant.master_url.split("?", 1)[1]
    assert (await client.get(f"/hls/{feeder.channel}/master.m3u8?{query}")
            ).status_code == 403


async def test_a_public_channel_is_unchanged(client: httpx.AsyncClient, catalog: SqlCatalog,
                                             feeder: LiveFeeder) -> None:
    from castway.model import Channel

    catalog.create_channel(Channel(name=feeder.channel))
    await feeder.push_segments(1)
    playlist = await client.get(f"/hls/{feeder.channel}/{feeder.rendition}/index.m3u8")
    assert playlist.status_code == 200
    assert playlist.headers["cache-control"] == "public, max-age=1"
    assert f"../../b/{feeder.broadcast_id}/" in playlist.text
    # The channel path's media route is a private channel's only.
    assert (await client.get(_live_urls(feeder)["segment"])).status_code == 404


async def test_a_private_channels_vod_needs_a_signature_after_the_end(
        client: httpx.AsyncClient, app: FastAPI, catalog: SqlCatalog, storage: LocalStorage,
        live: MemoryLiveState, private_live: LiveFeeder) -> None:
    from castway.model import BroadcastState

    feeder = private_live
    await live.update_broadcast(feeder.broadcast_id, state=BroadcastState.ENDED)
    await feeder.end()
    deadline = time.monotonic() + 5.0
    url = _live_urls(feeder)["segment by broadcast"]
    grant = app.state.origin.access.channel_grant(feeder.channel, 600)
    query = grant.master_url.split("?", 1)[1]
    # Ended: the channel's grant no longer opens its media (the VOD's grant does).
    while (await client.get(f"{url}?{query}")).status_code == 200:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    # The archiver gives a private channel's VOD private visibility (archiver tests); here
    # the record as it makes it.
    catalog.save_vod(Vod(id=feeder.broadcast_id, broadcast_id=feeder.broadcast_id,
                         channel=feeder.channel, visibility=Visibility.PRIVATE,
                         state=VodState.COMPLETE, duration_s=1.0))
    storage.put(f"broadcasts/{feeder.broadcast_id}/master.m3u8", b"#EXTM3U\n")
    vod = f"/vod/{feeder.broadcast_id}/master.m3u8"
    assert (await client.get(vod)).status_code == 403
    vod_grant = app.state.origin.access.grant(feeder.broadcast_id, 600)
    assert (await client.get(vod_grant.master_url)).status_code == 200
    expired = app.state.origin.access.grant(feeder.broadcast_id, 60, now=time.time() - 3600)
    assert (await client.get(expired.master_url)).status_code == 403
