"""origin.access: private VODs need a CloudFront-compatible signature (URL or cookies)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from castway.catalog.sql import SqlCatalog
from castway.model import Visibility, Vod, VodState
from castway.settings import Settings
from castway.signing import generate_private_key_pem
from castway.storage.local import LocalStorage
from tests.origin.conftest import AUTH, TOKEN


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
