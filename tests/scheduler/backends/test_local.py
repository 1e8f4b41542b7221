"""Local backend: real child processes started, listed, stopped, reaped."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from castway.model import NodeTier
from castway.settings import Settings
from scheduler.backends.local import LocalBackend

# A stand-in for `castway ingest`: records the environment it was given, then runs.
CHILD = """
import json, os, sys, time
path = os.path.join(sys.argv[1], os.environ["CASTWAY_NODE_ID"] + ".env")
with open(path + ".tmp", "w") as f:
    json.dump({k: v for k, v in os.environ.items() if k.startswith("CASTWAY_")}, f)
os.replace(path + ".tmp", path)
time.sleep(600)
"""


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    settings = Settings(data_dir=tmp_path / "data", redis_url="redis://127.0.0.1:1/0",
                        node_capacity=4)
    out = tmp_path / "env"
    out.mkdir()
    b = LocalBackend(settings, command=[sys.executable, "-c", CHILD, str(out)])
    yield b
    b.stop_all()


def wait_env(backend: LocalBackend, node_id: str) -> dict[str, str]:
    path = Path(backend.command[-1]) / f"{node_id}.env"
    import time

    deadline = time.monotonic() + 20
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.02)
    env: dict[str, str] = json.loads(path.read_text())
    return env


def pid_of(backend: LocalBackend, node_id: str) -> int:
    record = json.loads((backend.state_dir / f"{node_id}.json").read_text())
    return int(record["pid"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_start_launches_processes_with_their_node_settings(backend: LocalBackend) -> None:
    started = backend.start(2, "v9")
    assert len({i.node_id for i in started}) == 2
    for instance in started:
        env = wait_env(backend, instance.node_id)
        assert env["CASTWAY_NODE_ID"] == instance.node_id
        assert env["CASTWAY_IMAGE_VERSION"] == "v9"
        assert env["CASTWAY_REDIS_URL"] == "redis://127.0.0.1:1/0"
        assert env["CASTWAY_NODE_CAPACITY"] == "4"
        # any free port, bound by the node itself: its heartbeat carries the address
        assert env["CASTWAY_RTMP_PORT"] == "0"
        assert instance.address == ""
    assert {i.node_id for i in backend.list_instances()} == {i.node_id for i in started}


def test_stop_terminates_the_process_and_is_idempotent(backend: LocalBackend) -> None:
    a, b = backend.start(2, "v1")
    wait_env(backend, a.node_id)
    pid = pid_of(backend, a.node_id)
    backend.stop(a.node_id)
    backend.stop(a.node_id)
    backend.stop("never-started")
    assert not alive(pid)
    assert [i.node_id for i in backend.list_instances()] == [b.node_id]


def test_a_process_that_exits_by_itself_drops_out_of_the_list(backend: LocalBackend) -> None:
    [a] = backend.start(1, "v1")
    wait_env(backend, a.node_id)
    os.kill(pid_of(backend, a.node_id), 9)
    child = backend._children[a.node_id]
    child.wait(10)
    assert backend.list_instances() == []


def test_a_later_tick_process_sees_and_stops_earlier_nodes(backend: LocalBackend) -> None:
    """`castway scheduler tick` is one-shot: the next one finds the fleet on disk."""
    [a] = backend.start(1, "v1")
    wait_env(backend, a.node_id)
    pid = pid_of(backend, a.node_id)
    later = LocalBackend(backend.settings, command=backend.command)
    assert [i.node_id for i in later.list_instances()] == [a.node_id]
    later.stop(a.node_id)
    backend._children[a.node_id].wait(10)  # reap our child so it is really gone
    assert not alive(pid)
    assert later.list_instances() == []


def test_without_a_shared_live_state_nothing_is_started(tmp_path: Path) -> None:
    from scheduler.backends.base import BackendError

    b = LocalBackend(Settings(data_dir=tmp_path, redis_url=None), command=[sys.executable])
    with pytest.raises(BackendError, match="CASTWAY_REDIS_URL"):
        b.start(1, "v1")
    assert b.list_instances() == []


def test_an_edge_node_runs_the_edge_command_and_is_listed_as_an_edge(
        tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", redis_url="redis://127.0.0.1:1/0",
                        node_capacity=4, edge_capacity=150)
    ingest_out, edge_out = tmp_path / "ingest", tmp_path / "edge"
    ingest_out.mkdir()
    edge_out.mkdir()
    backend = LocalBackend(settings, command=[sys.executable, "-c", CHILD, str(ingest_out)],
                           edge_command=[sys.executable, "-c", CHILD, str(edge_out)])
    try:
        [edge] = backend.start(1, "v1", tier=NodeTier.EDGE)
        [ingest] = backend.start(1, "v1")
        assert (edge.tier, ingest.tier) == (NodeTier.EDGE, NodeTier.TRANSCODE)
        env = wait_env(LocalBackend(settings, command=["x", str(edge_out)]), edge.node_id)
        assert env["CASTWAY_NODE_ID"] == edge.node_id
        assert env["CASTWAY_RTMP_PORT"] == "0"  # binds any free port, heartbeats it
        assert env["CASTWAY_EDGE_CAPACITY"] == "150"
        assert not (ingest_out / f"{edge.node_id}.env").exists()  # not `castway ingest`
        # a later one-shot tick reads the tier from the record
        later = LocalBackend(settings)
        assert {(i.node_id, i.tier) for i in later.list_instances()} == {
            (edge.node_id, NodeTier.EDGE), (ingest.node_id, NodeTier.TRANSCODE)}
        assert later.edge_command[-2:] == ["launch.cli", "edge"]
    finally:
        backend.stop_all()
