"""Two chat processes (uvicorn, ``chat.app:app_from_env``) on one real Redis.

The acceptance criterion at test scale (the 1,000-client run is ``python -m benchmarks.chat``):
clients split between the processes, every message delivered exactly once and in order to
every client of its channel, whichever process its sender was connected to.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from benchmarks.chat import BenchConfig, chat_servers, run, server_env
from tests.chat.conftest import joined, recv, send

pytestmark = [pytest.mark.peer, pytest.mark.slow]


async def test_200_clients_on_two_processes_get_every_message_once_in_order(
        redis_url: str, tmp_path: Path) -> None:
    # 5 channels over 2 processes: every channel has clients (and senders) on both.
    config = BenchConfig(clients=200, channels=5, senders_per_channel=2,
                         messages_per_sender=10, send_interval_s=0.05)
    with chat_servers(2, redis_url, tmp_path, env=server_env(config, 500.0)) as servers:
        result = await run(servers, config)
        assert result.problems == []
        assert result.sent == 5 * 2 * 10
        assert result.deliveries == result.expected_deliveries == 200 * 2 * 10
        async with httpx.AsyncClient() as http:
            for server in servers:
                metrics = (await http.get(f"{server}/metrics")).text
                assert _value(metrics, "castway_chat_connects_total", 'result="accepted"') \
                    == 100
                # Every process queued every message of its channels to its own clients.
                assert _value(metrics, "castway_chat_messages_out_total") == 100 * 20
                assert _value(metrics, "castway_chat_fanout_seconds_count") == 100
                assert _value(metrics, "castway_chat_connections") == 0


async def test_history_moderation_and_bans_hold_across_processes(
        redis_url: str, tmp_path: Path) -> None:
    env = {"CASTWAY_ADMIN_TOKEN": "cross-process-token-0123456789"}
    auth = {"Authorization": f"Bearer {env['CASTWAY_ADMIN_TOKEN']}"}
    with chat_servers(2, redis_url, tmp_path, env=env) as (one, two):
        async with joined(one, "demo", "alice") as (alice, welcome, _), \
                joined(two, "demo", "bob") as (bob, _, _), \
                httpx.AsyncClient() as http:
            await send(alice, "first")
            first = await recv(bob)
            assert first["text"] == "first"
            await send(bob, "second")
            assert [(await recv(alice))["text"] for _ in range(2)] == ["first", "second"]
            assert (await recv(bob))["text"] == "second"
            deleted = await http.delete(f"{two}/api/v1/channels/demo/chat/messages/{first['id']}",
                                        headers=auth)
            assert deleted.json()["in_history"] is True
            for ws in (alice, bob):
                assert (await recv(ws))["type"] == "delete"
            banned = await http.post(f"{two}/api/v1/channels/demo/chat/bans", headers=auth,
                                     json={"user": welcome["user"]})
            assert banned.status_code == 201
            assert (await recv(alice))["type"] == "ban"
            await send(alice, "third")
            assert (await recv(alice))["code"] == "banned"
        async with joined(two, "demo", "carol") as (_, _, history):
            assert [m["text"] for m in history["messages"]] == ["second"]


def _value(metrics: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + \
        r" ([0-9.e+-]+)$"
    match = re.search(pattern, metrics, re.MULTILINE)
    assert match is not None, f"{name}{{{labels}}} not in metrics"
    return float(match.group(1))
