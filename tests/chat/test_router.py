"""The chat routes over a real uvicorn, in-process bus: WebSocket rooms, limits, moderation."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from castway.catalog import open_catalog
from castway.live.memory import MemoryLiveState
from castway.settings import Settings
from castway.storage.local import LocalStorage
from chat.app import create_chat_app
from chat.hub import ChatHub
from chat.protocol import MAX_TEXT_CHARS
from launch.http_app import create_platform_app
from tests.chat.conftest import AUTH, TOKEN, joined, recv, recv_type, send, serve, ws_url


def _settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"admin_token": TOKEN, "redis_url": None,
                                 "chat_redis_urls": None, "chat_history": 5,
                                 "chat_rate_per_s": 1.0, "chat_rate_burst": 3}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def base() -> AsyncIterator[str]:
    async with serve(create_chat_app(_settings())) as url:
        yield url


async def test_a_message_reaches_every_viewer_of_its_channel_only(base: str) -> None:
    async with joined(base, "demo", "alice") as (alice, welcome, history), \
            joined(base, "demo", "bob") as (bob, _, _), \
            joined(base, "other", "carol") as (carol, _, _):
        assert history["messages"] == []
        assert welcome["limits"]["max_chars"] == MAX_TEXT_CHARS
        await send(alice, "  hello 世界  ", ref="r1")
        for ws in (alice, bob):
            message = await recv(ws)
            assert message["type"] == "message"
            assert message["id"] == 1
            assert message["text"] == "hello 世界"
            assert message["nick"] == "alice"
            assert message["user"] == welcome["user"]
            assert message["ref"] == "r1"
            assert message["ts"] > 1_700_000_000_000
        await carol.send(json.dumps({"type": "ping"}))
        assert (await recv(carol))["type"] == "pong"  # nothing of demo came first


async def test_history_of_the_last_n_is_sent_on_join(base: str) -> None:
    async with joined(base, "demo", "alice") as (alice, _, _):
        for i in range(3):  # the burst
            await send(alice, f"m{i}")
            await recv_type(alice, "message")
    async with joined(base, "demo", "bob") as (_, _, history):
        assert [m["text"] for m in history["messages"]] == ["m0", "m1", "m2"]
        assert [m["id"] for m in history["messages"]] == [1, 2, 3]


async def test_over_long_message_is_refused_and_the_connection_stays_up(base: str) -> None:
    async with joined(base, "demo", "alice") as (alice, _, _), \
            joined(base, "demo", "bob") as (bob, _, _):
        await send(alice, "x" * (MAX_TEXT_CHARS + 1), ref="long")
        error = await recv(alice)
        assert error == {"type": "error", "code": "too_long", "ref": "long",
                         "message": f"messages are limited to {MAX_TEXT_CHARS} characters "
                                    f"(this one has {MAX_TEXT_CHARS + 1})"}
        await send(alice, "x" * MAX_TEXT_CHARS)
        assert (await recv(alice))["text"] == "x" * MAX_TEXT_CHARS
        assert (await recv(bob))["text"] == "x" * MAX_TEXT_CHARS


@pytest.mark.parametrize(("raw", "code"), [
    ("not json", "bad_frame"),
    ("[1, 2]", "bad_frame"),
    ('{"type": "shout", "text": "hi"}', "bad_frame"),
    ('{"type": "send", "text": 5}', "bad_frame"),
    ('{"type": "send", "text": "   "}', "empty"),
    ('{"type": "send", "text": "a\\u0000b"}', "bad_text"),
    ("x" * 5000, "frame_too_large"),
])
async def test_bad_frames_get_an_error_frame(base: str, raw: str, code: str) -> None:
    async with joined(base, "demo", "alice") as (alice, _, _):
        await alice.send(raw)
        assert (await recv(alice))["code"] == code
        await send(alice, "still here")
        assert (await recv(alice))["text"] == "still here"


async def test_a_binary_frame_gets_an_error_frame(base: str) -> None:
    async with joined(base, "demo", "alice") as (alice, _, _):
        await alice.send(b'{"type": "send", "text": "hi"}')
        error = await recv(alice)
        assert error["code"] == "bad_frame"
        assert error["message"] == "frames are JSON text, not binary"
        await send(alice, "text works")
        assert (await recv(alice))["text"] == "text works"


async def test_a_flood_is_refused_and_others_keep_chatting(base: str) -> None:
    async with joined(base, "demo", "flooder") as (flooder, _, _), \
            joined(base, "demo", "bob") as (bob, _, _):
        for i in range(20):
            await send(flooder, f"spam {i}", ref=str(i))
        frames = [await recv(flooder) for _ in range(20)]
        messages = [f for f in frames if f["type"] == "message"]
        errors = [f for f in frames if f["type"] == "error"]
        assert [m["text"] for m in messages] == ["spam 0", "spam 1", "spam 2"]  # the burst
        assert len(errors) == 17
        assert {e["code"] for e in errors} == {"rate_limited"}
        assert errors[0]["message"].startswith("slow down: at most 1 messages per second")
        await send(bob, "hi")
        seen = [await recv(bob) for _ in range(4)]
        assert [m["text"] for m in seen] == ["spam 0", "spam 1", "spam 2", "hi"]
        await flooder.send(json.dumps({"type": "ping"}))
        assert (await recv_type(flooder, "pong")) == {"type": "pong"}


@pytest.mark.parametrize(("channel", "nick", "reason"), [
    ("Bad!", "alice", "no such channel"),
    ("demo", "", "a nickname is 1-24"),
    ("demo", "a" * 25, "a nickname is 1-24"),
    ("demo", "spa%20ce", "a nickname is 1-24"),
])
async def test_bad_channel_or_nick_is_closed_with_a_policy_code(base: str, channel: str,
                                                               nick: str, reason: str) -> None:
    async with connect(ws_url(base, channel, nick)) as ws:
        error = await recv(ws)
        assert error["type"] == "error"
        assert error["message"].startswith(reason)
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_a_token_keeps_the_identity_across_reconnects(base: str) -> None:
    async with joined(base, "demo", "alice") as (_, first, _):
        pass
    async with joined(base, "demo", "alice", first["token"]) as (_, again, _):
        assert again["user"] == first["user"]
        assert again["token"] == first["token"]
    async with joined(base, "demo", "alice") as (_, fresh, _):
        assert fresh["user"] != first["user"]


async def test_moderation_deletes_a_message_everywhere_and_from_history(base: str) -> None:
    async with joined(base, "demo", "alice") as (alice, _, _), \
            joined(base, "demo", "bob") as (bob, _, _), \
            httpx.AsyncClient(base_url=base) as http:
        await send(alice, "keep")
        await send(alice, "rude")
        for ws in (alice, bob):
            await recv(ws)
            rude = await recv(ws)
        unauthorized = await http.delete(f"/api/v1/channels/demo/chat/messages/{rude['id']}")
        assert unauthorized.status_code == 401
        deleted = await http.delete(f"/api/v1/channels/demo/chat/messages/{rude['id']}",
                                    headers=AUTH)
        assert deleted.status_code == 200
        assert deleted.json() == {"channel": "demo", "id": rude["id"], "in_history": True}
        for ws in (alice, bob):
            assert await recv(ws) == {"type": "delete", "channel": "demo", "id": rude["id"]}
    async with joined(base, "demo", "carol") as (_, _, history):
        assert [m["text"] for m in history["messages"]] == ["keep"]


async def test_a_banned_user_is_refused_with_an_error_frame(base: str) -> None:
    async with joined(base, "demo", "troll") as (troll, welcome, _), \
            joined(base, "demo", "bob") as (bob, _, _), \
            httpx.AsyncClient(base_url=base, headers=AUTH) as http:
        bad = await http.post("/api/v1/channels/demo/chat/bans", json={})
        assert bad.status_code == 422
        banned = await http.post("/api/v1/channels/demo/chat/bans",
                                 json={"user": welcome["user"]})
        assert banned.status_code == 201
        for ws in (troll, bob):
            assert await recv(ws) == {"type": "ban", "channel": "demo",
                                      "user": welcome["user"], "nick": None}
        await send(troll, "still trolling", ref="t")
        error = await recv(troll)
        assert error["code"] == "banned" and error["ref"] == "t"
        await send(bob, "peace")
        assert (await recv(bob))["text"] == "peace"
        # A nickname ban catches a new identity under the same name, in any case.
        await http.post("/api/v1/channels/demo/chat/bans", json={"nick": "TROLL2"})
    async with joined(base, "demo", "troll2") as (again, _, _):
        await send(again, "hi")
        assert (await recv(again))["code"] == "banned"
    async with joined(base, "other", "troll2") as (elsewhere, _, _):
        await send(elsewhere, "hi")  # bans are per channel
        assert (await recv(elsewhere))["text"] == "hi"


async def test_widget_assets_are_served_and_nothing_else() -> None:
    async with serve(create_chat_app(_settings())) as url, \
            httpx.AsyncClient(base_url=url) as http:
        script = await http.get("/chat/static/chat.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert "data-castway-chat" in script.text
        assert (await http.get("/chat/static/chat.css")).status_code == 200
        assert (await http.get("/chat/static/..%2Fbus.py")).status_code == 404
        assert (await http.get("/chat/static/bus.py")).status_code == 404


async def test_a_connect_storm_is_paced_and_the_excess_told_to_retry() -> None:
    settings = _settings(chat_max_connects_per_s=5.0)
    async with serve(create_chat_app(settings)) as url:
        async def attempt(i: int) -> int | str:
            async with connect(ws_url(url, "demo", f"v{i}")) as ws:
                frame = await recv(ws)
                if frame["type"] == "welcome":
                    return "welcome"
                with pytest.raises(ConnectionClosed) as closed:
                    await recv(ws)
                assert closed.value.rcvd is not None
                return closed.value.rcvd.code
        results = await asyncio.gather(*(attempt(i) for i in range(40)))
        # 5 at once + 5/s for up to 2 s of waiting: about 15 get in, the rest get 1013.
        assert 10 <= results.count("welcome") <= 20, results
        assert set(results) == {"welcome", 1013}
        async with httpx.AsyncClient(base_url=url) as http:
            metrics = (await http.get("/metrics")).text
        assert 'castway_chat_connects_total{result="busy"}' in metrics


async def test_sockets_per_address_are_capped_with_a_policy_close() -> None:
    async with serve(create_chat_app(_settings(chat_max_connections_per_ip=3))) as url:
        async with contextlib.AsyncExitStack() as stack:
            held = [await stack.enter_async_context(joined(url, "demo", f"v{i}"))
                    for i in range(3)]
            async with connect(ws_url(url, "demo", "extra")) as ws:
                error = await recv(ws)
                assert error["type"] == "error"
                assert error["code"] == "too_many_connections"
                with pytest.raises(ConnectionClosed) as closed:
                    await recv(ws)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            # the ones in are unaffected
            await send(held[0][0], "still here")
            assert (await recv_type(held[1][0], "message"))["text"] == "still here"
        # all three left: the address may connect again
        async with joined(url, "demo", "again") as (_ws, welcome, _history):
            assert welcome["type"] == "welcome"


async def test_the_platform_app_comes_with_chat_started_by_its_lifespan(
        tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", admin_token=TOKEN, redis_url=None,
                        chat_redis_urls=None)
    registry = CollectorRegistry()
    catalog = open_catalog(settings)
    live = MemoryLiveState()
    try:
        app = create_platform_app(settings, catalog=catalog, live=live,
                                  storage=LocalStorage(tmp_path / "storage"),
                                  registry=registry)
        hub: ChatHub = app.state.chat  # the chat extension installs it
        assert not hub.started
        async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
            assert hub.started
            async with joined(url, "demo", "alice") as (alice, _, _):
                await send(alice, "from the origin")
                assert (await recv(alice))["text"] == "from the origin"
                metrics = (await http.get("/metrics")).text
                assert "castway_chat_connections 1.0" in metrics
            assert (await http.get("/api/v1/channels", headers=AUTH)).status_code == 200
            assert (await http.get("/chat/static/chat.js")).status_code == 200
        assert not hub.started
    finally:
        await live.close()
        catalog.close()
