"""/metrics reports what the in-process live state holds, so a full bounded cache can be
told from a leak (castway/runtime_metrics.py, MemoryLiveState.holdings)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest

from castway.live.memory import MemoryLiveState
from castway.model import Broadcast, BroadcastState, Segment
from castway.runtime_metrics import install_runtime_metrics


def _value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_the_live_state_holdings_are_gauges() -> None:
    live = MemoryLiveState()
    registry = CollectorRegistry()
    install_runtime_metrics(registry, asyncio.get_running_loop()).watch_live(live.holdings)
    await live.put_broadcast(Broadcast(id="b1", channel="ch1", node_id="n1",
                                       state=BroadcastState.LIVE,
                                       started_at=datetime(2026, 1, 1, tzinfo=UTC)))
    await live.put_media("broadcasts/b1/source/0.m4s", b"x" * 1000, ttl_s=10)
    await live.put_media("broadcasts/b1/source/1.m4s", b"y" * 500, ttl_s=20)
    segment = Segment(msn=0, duration_s=1.0, key="broadcasts/b1/source/0.m4s",
                      start_pts_s=0.0, program_date_time=datetime(2026, 1, 1, tzinfo=UTC))
    await live.append_segment_log("b1", "source", segment)

    text = generate_latest(registry).decode()
    assert _value(text, "castway_live_media_bytes") == 1500
    assert _value(text, "castway_live_media_objects") == 2
    assert _value(text, "castway_live_broadcasts") == 1
    assert _value(text, "castway_live_segment_log_entries") == 1
    assert _value(text, 'python_gc_collections_total{generation="2"}') >= 0

    await live.remove_broadcast("b1")
    text = generate_latest(registry).decode()
    assert _value(text, "castway_live_media_bytes") == 0
    assert _value(text, "castway_live_broadcasts") == 0
