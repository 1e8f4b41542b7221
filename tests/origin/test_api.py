"""origin.api: the control API end to end over SqlCatalog (SQLite), MemoryLiveState and
LocalStorage."""

from __future__ import annotations

import httpx
import pytest

from castway.catalog.sql import SqlCatalog
from castway.events.nodes import StopBroadcast, node_commands_topic
from castway.keys import hash_stream_key
from castway.live.memory import MemoryLiveState
from castway.model import Broadcast, BroadcastState, Node, NodeState, Visibility, Vod, VodState
from castway.storage.local import LocalStorage
from origin.access import MAX_GRANT_S, MIN_GRANT_S
from tests.origin.conftest import AUTH


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic dXNlcjpwYXNz"},
                                     {"Authorization": "Bearer"}])
async def test_every_endpoint_needs_the_token(client: httpx.AsyncClient,
                                              headers: dict[str, str]) -> None:
    for method, path in [("GET", "/api/v1/channels"), ("POST", "/api/v1/channels"),
                         ("GET", "/api/v1/broadcasts"), ("GET", "/api/v1/vods"),
                         ("GET", "/api/v1/nodes"), ("DELETE", "/api/v1/channels/x")]:
        response = await client.request(method, path, headers=headers)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["cache-control"] == "no-store"
        assert "detail" in response.json()


async def test_api_is_closed_without_a_configured_token(client: httpx.AsyncClient,
                                                        app: object) -> None:
    from fastapi import FastAPI

    assert isinstance(app, FastAPI)
    app.state.origin.settings.admin_token = None
    response = await client.get("/api/v1/channels", headers=AUTH)
    assert response.status_code == 401
    assert "no admin token" in response.json()["detail"]


async def test_channel_lifecycle_and_keys(client: httpx.AsyncClient,
                                          catalog: SqlCatalog) -> None:
    created = await client.post("/api/v1/channels", headers=AUTH,
                                json={"name": "my-show", "title": "My <show>"})
    assert created.status_code == 201
    body = created.json()
    assert body["channel"]["name"] == "my-show"
    assert body["channel"]["hls_url"] == "http://origin.test/hls/my-show/master.m3u8"
    key = body["stream_key"]["stream_key"]
    assert key.startswith("cw_")
    assert body["stream_key"]["rtmp_url"] == "rtmp://127.0.0.1:1935/live"
    # Stored only as a hash.
    assert catalog.channel_for_key_hash(hash_stream_key(key)) == "my-show"

    again = await client.post("/api/v1/channels", headers=AUTH, json={"name": "my-show"})
    assert again.status_code == 409

    listed = await client.get("/api/v1/channels", headers=AUTH)
    assert [c["name"] for c in listed.json()] == ["my-show"]
    assert "stream_key" not in listed.text

    patched = await client.patch("/api/v1/channels/my-show", headers=AUTH,
                                 json={"title": "Renamed", "vod_visibility": "private"})
    assert patched.status_code == 200
    assert patched.json()["title"] == "Renamed"
    assert patched.json()["vod_visibility"] == "private"

    added = await client.post("/api/v1/channels/my-show/keys", headers=AUTH)
    assert added.status_code == 201
    second = added.json()["stream_key"]
    assert catalog.channel_for_key_hash(hash_stream_key(key)) == "my-show"  # both valid

    rotated = await client.post("/api/v1/channels/my-show/keys/rotate", headers=AUTH)
    assert rotated.status_code == 201 and rotated.json()["revoked"] == 2
    third = rotated.json()["stream_key"]
    assert catalog.channel_for_key_hash(hash_stream_key(key)) is None
    assert catalog.channel_for_key_hash(hash_stream_key(second)) is None
    assert catalog.channel_for_key_hash(hash_stream_key(third)) == "my-show"

    revoked = await client.delete("/api/v1/channels/my-show/keys", headers=AUTH)
    assert revoked.json() == {"channel": "my-show", "revoked": 1}

    deleted = await client.delete("/api/v1/channels/my-show", headers=AUTH)
    assert deleted.status_code == 204
    assert (await client.get("/api/v1/channels/my-show", headers=AUTH)).status_code == 404
    assert (await client.delete("/api/v1/channels/my-show", headers=AUTH)).status_code == 404


@pytest.mark.parametrize("body", [
    {"name": "Upper"}, {"name": "-dash"}, {"name": "a/b"}, {"name": "../x"}, {"name": ""},
    {"name": "Bad Name/../x"},
    {"name": "x" * 65}, {"name": "ok", "title": "t" * 201}, {"name": "ok", "extra": 1},
    {"name": "ok", "vod_visibility": "secret"}, {},
])
async def test_channel_input_is_validated(client: httpx.AsyncClient,
                                          body: dict[str, object]) -> None:
    response = await client.post("/api/v1/channels", headers=AUTH, json=body)
    assert response.status_code == 422
    assert response.json()["detail"]


@pytest.mark.parametrize("name", ["a", "0", "my_channel-2", "a" * 64])
async def test_every_name_of_the_rule_makes_a_channel_that_answers(
        client: httpx.AsyncClient, name: str) -> None:
    created = await client.post("/api/v1/channels", headers=AUTH, json={"name": name})
    assert created.status_code == 201, created.text
    watch = created.json()["channel"]["watch_url"].removeprefix("http://origin.test")
    assert (await client.get(watch)).status_code == 200


async def test_channel_path_names_are_validated(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/channels/NOT_A_SLUG", headers=AUTH)
    assert response.status_code == 422


async def test_live_channel_cannot_be_deleted(client: httpx.AsyncClient,
                                              live: MemoryLiveState) -> None:
    await client.post("/api/v1/channels", headers=AUTH, json={"name": "busy"})
    await live.put_broadcast(Broadcast(id="bb1", channel="busy", node_id="n1"))
    response = await client.delete("/api/v1/channels/busy", headers=AUTH)
    assert response.status_code == 409
    channel = await client.get("/api/v1/channels/busy", headers=AUTH)
    assert channel.json()["live_broadcast_id"] == "bb1"


async def test_broadcasts_by_state_with_stats(client: httpx.AsyncClient,
                                              live: MemoryLiveState,
                                              catalog: SqlCatalog) -> None:
    await live.put_broadcast(Broadcast(id="live1", channel="a", node_id="n1"))
    await live.put_stats("live1", {"viewers": 3.0, "input_kbps": 2500.0})
    catalog.save_broadcast(Broadcast(id="old1", channel="a", node_id="n1",
                                     state=BroadcastState.ENDED))
    live_only = (await client.get("/api/v1/broadcasts?state=live", headers=AUTH)).json()
    assert [b["id"] for b in live_only] == ["live1"]
    assert live_only[0]["stats"] == {"viewers": 3.0, "input_kbps": 2500.0}
    ended = (await client.get("/api/v1/broadcasts?state=ended", headers=AUTH)).json()
    assert [b["id"] for b in ended] == ["old1"]
    both = (await client.get("/api/v1/broadcasts", headers=AUTH)).json()
    assert {b["id"] for b in both} == {"live1", "old1"}
    bad = await client.get("/api/v1/broadcasts?state=paused", headers=AUTH)
    assert bad.status_code == 422
    one = await client.get("/api/v1/broadcasts/old1", headers=AUTH)
    assert one.json()["state"] == "ended"
    assert (await client.get("/api/v1/broadcasts/nope", headers=AUTH)).status_code == 404


async def test_stop_answers_404_for_an_unknown_and_409_for_an_ended_broadcast(
        client: httpx.AsyncClient, catalog: SqlCatalog) -> None:
    catalog.save_broadcast(Broadcast(id="old1", channel="a", node_id="n7",
                                     state=BroadcastState.ENDED))
    missing = await client.post("/api/v1/broadcasts/gone/stop", headers=AUTH)
    assert missing.status_code == 404
    ended = await client.post("/api/v1/broadcasts/old1/stop", headers=AUTH)
    assert ended.status_code == 409 and "not live (ended)" in ended.json()["detail"]


async def test_stop_goes_to_the_node_running_the_broadcast(client: httpx.AsyncClient,
                                                            live: MemoryLiveState) -> None:
    """The wire of the stop; its effect on a real node and publisher is in
    tests/test_stop_broadcast.py."""
    await live.put_broadcast(Broadcast(id="live2", channel="a", node_id="n7"))
    async with await live.subscribe(node_commands_topic("n7")) as commands:
        response = await client.post("/api/v1/broadcasts/live2/stop", headers=AUTH)
        assert response.status_code == 202
        assert await commands.get() == StopBroadcast("live2")


async def test_stop_says_so_when_the_node_is_not_listening(client: httpx.AsyncClient,
                                                           live: MemoryLiveState) -> None:
    await live.put_broadcast(Broadcast(id="live3", channel="a", node_id="dead-node"))
    response = await client.post("/api/v1/broadcasts/live3/stop", headers=AUTH)
    assert response.status_code == 503 and "dead-node" in response.json()["detail"]


async def test_vod_visibility_and_delete(client: httpx.AsyncClient, catalog: SqlCatalog,
                                         storage: LocalStorage) -> None:
    catalog.save_vod(Vod(id="v1", broadcast_id="v1", channel="a",
                         visibility=Visibility.PUBLIC, state=VodState.COMPLETE,
                         duration_s=60.0))
    for name in ("master.m3u8", "360p/vod.m3u8", "360p/0.m4s", "poster.jpg"):
        storage.put(f"broadcasts/v1/{name}", b"x")
    storage.put("broadcasts/v10/master.m3u8", b"another broadcast")
    listed = (await client.get("/api/v1/vods", headers=AUTH)).json()
    assert [v["id"] for v in listed] == ["v1"]
    assert listed[0]["watch_url"] == "http://origin.test/watch/vod/v1"

    private = await client.patch("/api/v1/vods/v1", headers=AUTH,
                                 json={"visibility": "private"})
    assert private.json()["visibility"] == "private"
    assert (await client.get("/vod/v1/master.m3u8")).status_code == 404
    bad = await client.patch("/api/v1/vods/v1", headers=AUTH, json={"visibility": "x"})
    assert bad.status_code == 422

    deleted = await client.delete("/api/v1/vods/v1", headers=AUTH)
    assert deleted.json() == {"id": "v1", "objects_deleted": 4}
    assert list(storage.list("broadcasts/v1/")) == []
    assert storage.exists("broadcasts/v10/master.m3u8")
    assert (await client.get("/api/v1/vods/v1", headers=AUTH)).status_code == 404


async def test_nodes(client: httpx.AsyncClient, live: MemoryLiveState) -> None:
    await live.heartbeat(Node(id="n1", image_version="v2", address="10.0.0.1:1935",
                              state=NodeState.ACTIVE, capacity=8, active_broadcasts=3,
                              cost_capacity=1.7, cost_used=1.2, cost_error=0.08),
                         ttl_s=30)
    nodes = (await client.get("/api/v1/nodes", headers=AUTH)).json()
    assert nodes[0]["id"] == "n1" and nodes[0]["free_slots"] == 5
    assert nodes[0]["state"] == "active"
    assert (nodes[0]["cost_capacity"], nodes[0]["cost_used"], nodes[0]["cost_free"],
            nodes[0]["cost_error"]) == (1.7, 1.2, 0.5, 0.08)


async def test_openapi_documents_the_api(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "/api/v1/channels" in spec["paths"]
    assert "/api/v1/channels/{name}/keys/rotate" in spec["paths"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert (await client.get("/docs")).status_code == 200


async def test_grant_needs_an_rsa_signing_key(client: httpx.AsyncClient,
                                              catalog: SqlCatalog) -> None:
    catalog.save_vod(Vod(id="v3", broadcast_id="v3", channel="a",
                         visibility=Visibility.PRIVATE, state=VodState.COMPLETE,
                         duration_s=1.0))
    response = await client.post("/api/v1/vods/v3/grant", headers=AUTH, json={})
    assert response.status_code == 409
    assert "CASTWAY_SIGNING_KEY" in response.json()["detail"]
    for ttl_s in (MIN_GRANT_S - 1, MAX_GRANT_S + 1):
        bad = await client.post("/api/v1/vods/v3/grant", headers=AUTH, json={"ttl_s": ttl_s})
        assert bad.status_code == 422
