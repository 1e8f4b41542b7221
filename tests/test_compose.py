"""docker-compose.yml runs the distributed mode: every castway service's command parses
with the real CLI, every CASTWAY_* variable is a real setting with a valid value, and
published ports match the ports the command binds. (No Docker engine runs here.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from castway.settings import Settings
from launch.cli import build_parser

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
    assert commands == {"ingest", "origin", "worker", "scheduler"}
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
    ingest = parser.parse_args(CASTWAY_SERVICES["ingest"]["command"])
    origin = parser.parse_args(CASTWAY_SERVICES["origin"]["command"])
    assert ingest.rtmp_port in _published(CASTWAY_SERVICES["ingest"])
    assert origin.http_port in _published(CASTWAY_SERVICES["origin"])
    assert ingest.host == origin.host == "0.0.0.0"


def test_ingest_gets_time_to_let_broadcasts_end_on_stop() -> None:
    grace = CASTWAY_SERVICES["ingest"]["stop_grace_period"]
    assert grace.endswith("m") and int(grace[:-1]) >= 1
