"""docker-compose.yml runs the distributed mode: every castway service's command parses
with the real CLI, every CASTWAY_* variable is a real setting with a valid value, and
published ports match the ports the command binds. Publishers reach the edge only; the
transcoding node heartbeats the address the edge relays to, on the compose network.
(No Docker engine runs here.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from castway.live.memory import MemoryLiveState
from castway.model import NodeTier
from castway.proxy_protocol import ProxyHeader, ProxyHeaderReader
from castway.settings import Settings
from ingest.edge.link import proxy_header
from launch.cli import _settings, build_parser
from scheduler.agent import NodeAgent

ROOT = Path(__file__).parents[1]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
CASTWAY_SERVICES = {name: svc for name, svc in SERVICES.items() if svc.get("build") == "."}


def _expand(value: str) -> str:
    """Compose's ${VAR:-default} with the default (the environment of a fresh host)."""
    if value.startswith("${") and ":-" in value:
        return value[value.index(":-") + 2:-1]
    return value


def test_every_service_has_an_image_or_a_build() -> None:
    for name, svc in SERVICES.items():
        assert "image" in svc or "build" in svc, name


def test_the_distributed_components_all_run_from_the_castway_image() -> None:
    commands = {svc["command"][0] for svc in CASTWAY_SERVICES.values()}
    assert commands == {"edge", "ingest", "origin", "worker", "scheduler"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["castway"]' in dockerfile


@pytest.mark.parametrize("name", sorted(CASTWAY_SERVICES))
def test_command_parses_with_the_real_cli(name: str) -> None:
    command = CASTWAY_SERVICES[name]["command"]
    args = build_parser().parse_args(command)
    assert args.command == command[0]


@pytest.mark.parametrize("name", sorted(CASTWAY_SERVICES))
def test_environment_is_made_of_real_settings(name: str, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    env = {k: _expand(str(v)) for k, v in CASTWAY_SERVICES[name]["environment"].items()}
    castway_vars = {k: v for k, v in env.items() if k.startswith("CASTWAY_")}
    known = {f"CASTWAY_{f.upper()}" for f in Settings.model_fields}
    assert set(castway_vars) <= known, set(castway_vars) - known
    for k in list(os.environ):
        if k.startswith("CASTWAY_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    for k, v in castway_vars.items():
        monkeypatch.setenv(k, v)
    settings = Settings()  # validates every value
    assert settings.redis_url and settings.database_url
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.storage_url and settings.storage_url.startswith("s3://")
    # the backing services the URLs name exist in the file
    for host in ("postgres", "redis", "minio"):
        assert host in SERVICES


def _published(svc: dict[str, Any]) -> set[int]:
    return {int(str(p).split(":")[-1]) for p in svc.get("ports", [])}


def test_published_ports_are_the_ports_the_commands_bind() -> None:
    parser = build_parser()
    edge = parser.parse_args(CASTWAY_SERVICES["edge"]["command"])
    origin = parser.parse_args(CASTWAY_SERVICES["origin"]["command"])
    assert _published(CASTWAY_SERVICES["edge"]) == {edge.rtmp_port}
    assert origin.http_port in _published(CASTWAY_SERVICES["origin"])
    assert edge.host == origin.host == "0.0.0.0"
    # the URL printed for OBS is the edge's
    env = CASTWAY_SERVICES["origin"]["environment"]
    assert env["CASTWAY_PUBLIC_RTMP_URL"] == f"rtmp://localhost:{edge.rtmp_port}/live"


def test_only_the_edge_takes_publishers_from_the_host() -> None:
    published = {name for name, svc in CASTWAY_SERVICES.items()
                 if any(int(str(p).split(":")[-1]) in (1935, 1936) for p in
                        svc.get("ports", []))}
    assert published == {"edge"}
    assert "ports" not in CASTWAY_SERVICES["ingest"]


def read_proxy_header(data: bytes) -> ProxyHeader:
    """The header a node's reader makes of ``data`` (fed as a socket would)."""
    reader = ProxyHeaderReader()
    header = None
    while header is None:
        chunk, data = data[:reader.wanted], data[reader.wanted:]
        assert chunk, "the header ended early"
        header = reader.receive_data(chunk)
    return header


def _settings_of(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """The settings a service's process runs with: its environment, then its flags."""
    svc = CASTWAY_SERVICES[name]
    for k in list(os.environ):
        if k.startswith("CASTWAY_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    for k, v in svc["environment"].items():
        if k.startswith("CASTWAY_"):
            monkeypatch.setenv(k, _expand(str(v)))
    return _settings(build_parser().parse_args(svc["command"]))


def test_the_transcoding_node_heartbeats_its_compose_network_address(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The edge relays to the address a node heartbeats: the node's name on the compose
    network and its RTMP port, not the 0.0.0.0 it would bind with --host."""
    settings = _settings_of("ingest", monkeypatch, tmp_path)
    agent = NodeAgent(settings, MemoryLiveState(), active_broadcasts=lambda: 0)
    assert agent.tier == NodeTier.TRANSCODE
    host, port = agent.address.rsplit(":", 1)
    assert host == "ingest" and host in SERVICES  # the service's name resolves to it
    assert CASTWAY_SERVICES["ingest"]["hostname"] == host  # and to it alone, in itself
    assert str(port) in {str(p) for p in CASTWAY_SERVICES["ingest"]["expose"]}
    # The edge names each publisher in a PROXY v2 header the node expects, so the node's
    # per-address limit counts publishers, not the edge all its relays come from.
    edge = _settings_of("edge", monkeypatch, tmp_path)
    assert edge.relay_proxy_protocol and settings.proxy_protocol
    assert read_proxy_header(proxy_header("203.0.113.7:50122", agent.address)).source == (
        "203.0.113.7", 50122)
    assert "CASTWAY_MAX_CONNECTIONS_PER_IP" not in CASTWAY_SERVICES["ingest"]["environment"]


def test_the_scheduler_knows_the_fleet_has_an_edge_tier(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    scheduler = _settings_of("scheduler", monkeypatch, tmp_path)
    assert scheduler.edge_tier
    assert scheduler.scheduler_backend == "static"
    edge = _settings_of("edge", monkeypatch, tmp_path)
    assert edge.edge_capacity == scheduler.edge_capacity  # the scheduler counts its slots
    assert not edge.proxy_protocol  # no load balancer in front of it here


@pytest.mark.parametrize("name", ["edge", "ingest"])
def test_rtmp_nodes_get_time_to_let_broadcasts_end_on_stop(name: str) -> None:
    grace = CASTWAY_SERVICES[name]["stop_grace_period"]
    assert grace.endswith("m") and int(grace[:-1]) >= 1
