"""A fleet with an edge on this machine: real ``castway ingest`` nodes started by the
local backend, a real ``castway edge`` process, a real redis-server, one SQLite catalog
and file storage shared by all."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from castway.catalog import open_catalog
from castway.keys import hash_stream_key
from castway.live.base import LiveState
from castway.model import Channel, Node, NodeState, NodeTier, StreamKey
from castway.settings import Settings
from scheduler.backends.local import LocalBackend

KEYS = {"alpha": "cw_alpha-key", "beta": "cw_beta-key", "gamma": "cw_gamma-key"}


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", redis_url=redis_url, image_version="v1",
                    database_url=f"sqlite:///{tmp_path / 'catalog.db'}",
                    storage_url=str(tmp_path / "storage"), host="127.0.0.1",
                    node_capacity=4, heartbeat_ttl_s=3.0, scheduler_interval_s=1.0)


def node_env(settings: Settings, *, transcode: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASTWAY_")}
    env.update(PYTHONPATH=str(Path.cwd()), CASTWAY_TRANSCODE=str(transcode).lower(),
               CASTWAY_DATABASE_URL=settings.effective_database_url,
               CASTWAY_STORAGE_URL=settings.effective_storage_url,
               CASTWAY_HTTP_PORT="0", CASTWAY_RECONNECT_GRACE_S="10",
               CASTWAY_STOP_TIMEOUT_S="60", CASTWAY_LOG_JSON="true",
               CASTWAY_HEARTBEAT_TTL_S=str(settings.heartbeat_ttl_s))
    return env


@pytest.fixture
def channels(settings: Settings) -> dict[str, str]:
    catalog = open_catalog(settings)  # the schema exists before the nodes open it
    for channel, key in KEYS.items():
        catalog.create_channel(Channel(channel))
        catalog.add_stream_key(StreamKey(channel, hash_stream_key(key)))
    catalog.close()
    return KEYS


@pytest.fixture
def backend(settings: Settings, channels: dict[str, str]) -> Iterator[LocalBackend]:
    b = LocalBackend(settings, command=[sys.executable, "-m", "launch.cli", "ingest"],
                     env=node_env(settings, transcode=True))
    yield b
    b.stop_all()


@dataclass
class EdgeProcess:
    process: subprocess.Popen[bytes]
    log: Path
    node_id: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def edge(settings: Settings, channels: dict[str, str], tmp_path: Path
         ) -> Iterator[EdgeProcess]:
    env = node_env(settings, transcode=False)
    env.update(CASTWAY_NODE_ID="edge-1", CASTWAY_IMAGE_VERSION="v1",
               CASTWAY_RTMP_PORT="0", CASTWAY_HOST="127.0.0.1",
               CASTWAY_DATA_DIR=str(settings.data_dir),
               CASTWAY_REDIS_URL=settings.redis_url or "")
    log = tmp_path / "edge.log"
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "launch.cli", "edge"], env=env,
                                   stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT)
    e = EdgeProcess(process, log, "edge-1")
    yield e
    e.stop()


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[LiveState]:
    from castway.live import open_live_state

    state = open_live_state(settings)
    yield state
    await state.close()


async def nodes_of(live: LiveState, tier: NodeTier, state: NodeState = NodeState.ACTIVE,
                   version: str | None = None) -> list[Node]:
    return sorted((n for n in await live.list_nodes()
                   if n.tier is tier and n.state == state
                   and (version is None or n.image_version == version)),
                  key=lambda n: n.id)


def wait_exit(process: subprocess.Popen[bytes], timeout_s: float) -> float:
    started = time.monotonic()
    process.wait(timeout_s)
    return time.monotonic() - started
