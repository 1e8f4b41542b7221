"""deploy/aws/castway.yaml: cfn-lint clean, and wired to the code it deploys.

Every container's CASTWAY_* variable is a real setting with a valid value; the ports the
load balancers, target groups and health checks use are the ports the containers' commands
bind (parsed with the real CLI); health checks hit the agreed paths; CloudFront keys the
LL-HLS delivery directives; the scheduler Lambda runs every minute with the real handler,
an input the ECS backend accepts, and exactly the permissions its boto3 calls need. The
RTMP topology has two tiers: the NLB reaches the edge tasks (``castway edge``) only, and
the transcoding tasks (``castway ingest``) are reached by the edges only, at the private
address they heartbeat.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cfnlint.api import ManualArgs, lint_file  # type: ignore[import-untyped]
from cfnlint.decode import decode  # type: ignore[import-untyped]

from castway.health.asgi import create_health_app
from castway.live.memory import MemoryLiveState
from castway.model import NodeTier
from castway.proxy_protocol import ProxyHeader, ProxyHeaderReader
from castway.settings import Settings
from launch.cli import _settings, build_parser
from launch.http_app import create_platform_app
from launch.services import Services
from scheduler.agent import NodeAgent
from scheduler.backends.ecs import EcsConfig

ROOT = Path(__file__).parents[2]
TEMPLATE_PATH = ROOT / "deploy" / "aws" / "castway.yaml"
REGIONS = ["us-east-1", "eu-west-1", "ap-northeast-1"]
AGREED_LIVENESS = "/healthz"
AGREED_READINESS = "/readyz"


def _load() -> dict[str, Any]:
    template, errors = decode(str(TEMPLATE_PATH))
    assert not errors, errors
    assert template is not None
    return dict(template)


TEMPLATE = _load()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
PARAMETERS: dict[str, Any] = TEMPLATE["Parameters"]


def _of_type(kind: str) -> dict[str, Any]:
    return {name: r for name, r in RESOURCES.items() if r["Type"] == kind}


def _props(name: str) -> dict[str, Any]:
    props: dict[str, Any] = RESOURCES[name]["Properties"]
    return props


def _containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, resource in _of_type("AWS::ECS::TaskDefinition").items():
        for container in resource["Properties"]["ContainerDefinitions"]:
            yield name, container


def _container(name: str) -> dict[str, Any]:
    found = [c for _, c in _containers() if c["Name"] == name]
    assert len(found) == 1, name
    return found[0]


def _task_definition_of(container_name: str) -> str:
    return next(td for td, c in _containers() if c["Name"] == container_name)


#: How the transcoding container's entry point (``sh -c``) hands over to castway.
EXEC_CASTWAY = "exec castway "


def _argv(container_name: str) -> list[str]:
    """The castway command line a container runs: its Command under the image's
    ``castway`` entry point, or the line its ``sh -c`` script ends with."""
    container = _container(container_name)
    command = [str(a) for a in container["Command"]]
    if container.get("EntryPoint") == ["sh", "-c"]:
        (script,) = command
        assert script.count(EXEC_CASTWAY) == 1, script
        return shlex.split(script.split(EXEC_CASTWAY, 1)[1])
    assert "EntryPoint" not in container, container_name
    return command


def _args(container_name: str) -> Any:
    return build_parser().parse_args(_argv(container_name))


def _refs(value: Any) -> set[str]:
    """Every resource or parameter a value names (Ref, GetAtt, ${...} in Sub)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref":
                found.add(str(inner))
            elif key == "Fn::GetAtt":
                found.add(str(inner[0]) if isinstance(inner, list) else str(inner).split(".")[0])
            elif key == "Fn::Sub":
                text = inner[0] if isinstance(inner, list) else inner
                found |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", str(text))}
                found |= _refs(inner[1:] if isinstance(inner, list) else [])
            else:
                found |= _refs(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= _refs(inner)
    return found


PORTS = {"Redis.PrimaryEndPoint.Port": "6379", "Database.Endpoint.Port": "5432"}


def _placeholder(name: str, variables: dict[str, str]) -> str:
    if name in variables:
        return variables[name]
    if name in PORTS:
        return PORTS[name]
    if name == "AWS::Region":
        return "us-east-1"
    if name in PARAMETERS and PARAMETERS[name].get("Default") not in (None, ""):
        return str(PARAMETERS[name]["Default"])
    return re.sub(r"[^a-z0-9]+", "-", name.lower())


def _render(value: Any) -> str:
    """A plausible deployed value of an env entry: parameters' defaults, placeholders for
    attributes only AWS knows; the If's domain branch (both branches are URLs)."""
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, dict):
        if "Ref" in value:
            name = str(value["Ref"])
            if name == "AWS::Region":
                return "us-east-1"
            default = PARAMETERS.get(name, {}).get("Default")
            return str(default) if default not in (None, "") else f"{name.lower()}-value"
        if "Fn::Sub" in value:
            inner = value["Fn::Sub"]
            text = str(inner[0] if isinstance(inner, list) else inner)
            variables = {k: str(v) for k, v in (inner[1] if isinstance(inner, list) else {}
                                               ).items()}
            text = re.sub(r"\{\{resolve:[^}]*\}\}", "secret", text)
            return re.sub(r"\$\{([^}]+)\}", lambda m: _placeholder(m.group(1), variables),
                          text)
        if "Fn::If" in value:
            return _render(value["Fn::If"][2])
    raise AssertionError(f"cannot render {value!r}")


# --- cfn-lint ---------------------------------------------------------------------------

def test_cfn_lint_finds_nothing_not_even_informational() -> None:
    matches = lint_file(TEMPLATE_PATH, ManualArgs(regions=REGIONS, include_checks=["I"]))
    assert [f"{m.rule.id} {m.message} (line {m.linenumber})" for m in matches] == []


# --- environment ------------------------------------------------------------------------

def _environment(container: dict[str, Any]) -> dict[str, Any]:
    env = {e["Name"]: e["Value"] for e in container.get("Environment", [])}
    env.update({s["Name"]: s["ValueFrom"] for s in container.get("Secrets", [])})
    return env


KNOWN_SETTINGS = {f"CASTWAY_{f.upper()}" for f in Settings.model_fields}


#: What each container cannot do without. The edge stores nothing (no archive, no
#: watch URL): the catalog for stream keys, Redis for the nodes it relays to.
NEEDED = {"CASTWAY_DATABASE_URL", "CASTWAY_REDIS_URL", "CASTWAY_IMAGE_VERSION"}
NEEDED_BY = {"ingest": NEEDED | {"CASTWAY_STORAGE_URL", "CASTWAY_PUBLIC_URL"},
             "origin": NEEDED | {"CASTWAY_STORAGE_URL", "CASTWAY_PUBLIC_URL"},
             "worker": NEEDED | {"CASTWAY_STORAGE_URL", "CASTWAY_PUBLIC_URL"},
             "edge": NEEDED | {"CASTWAY_EDGE_CAPACITY"}}


@pytest.mark.parametrize("container", sorted(NEEDED_BY))
def test_container_environment_is_made_of_real_settings(
        container: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = _environment(_container(container))
    assert set(env) <= KNOWN_SETTINGS, set(env) - KNOWN_SETTINGS
    for must in NEEDED_BY[container]:
        assert must in env, (container, must)
    # the database URL (with its password) only ever comes from Secrets Manager
    secrets = {s["Name"]: s["ValueFrom"] for s in _container(container).get("Secrets", [])}
    assert _refs(secrets["CASTWAY_DATABASE_URL"]) == {"DatabaseUrlSecret"}

    for k in list(os.environ):
        if k.startswith("CASTWAY_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    for k, v in env.items():
        if k not in secrets:
            monkeypatch.setenv(k, _render(v))
    monkeypatch.setenv("CASTWAY_DATABASE_URL", _render(
        _props("DatabaseUrlSecret")["SecretString"]))
    settings = Settings()  # validates every value
    assert settings.database_url and settings.database_url.startswith("postgresql+psycopg://")
    assert settings.redis_url and settings.redis_url.startswith("redis://")
    assert _refs(env["CASTWAY_REDIS_URL"]) == {"Redis"}
    if container == "edge":
        assert _refs(env["CASTWAY_IMAGE_VERSION"]) == {"EdgeImageTag", "ImageTag"}
        assert _refs(env["CASTWAY_EDGE_CAPACITY"]) == {"EdgeCapacity"}
        return
    assert settings.storage_url and settings.storage_url.startswith("s3://")
    assert settings.effective_public_url.startswith("https://")
    assert _refs(env["CASTWAY_IMAGE_VERSION"]) == {"ImageTag"}
    assert _refs(env["CASTWAY_STORAGE_URL"]) == {"ArchiveBucket"}


def test_scheduler_lambda_environment_is_made_of_real_settings(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = _props("SchedulerFunction")["Environment"]["Variables"]
    assert set(env) <= KNOWN_SETTINGS, set(env) - KNOWN_SETTINGS
    for k in list(os.environ):
        if k.startswith("CASTWAY_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, _render(v))
    settings = Settings()
    assert settings.scheduler_backend == "ecs"
    assert settings.redis_url and settings.redis_url.startswith("redis://")  # lock + memory
    assert str(settings.data_dir).startswith("/tmp")  # Lambda's only writable place
    assert _refs(env["CASTWAY_DESIRED_VERSION"]) == {"ImageTag"}
    # two tiers, each sized by its own parameters; the edges' capacity is the one the
    # edge tasks announce
    assert settings.edge_tier is True
    assert _refs(env["CASTWAY_EDGE_DESIRED_VERSION"]) == {"EdgeImageTag", "ImageTag"}
    assert _refs(env["CASTWAY_EDGE_MAX_NODES"]) == {"MaxEdgeNodes"}
    assert _refs(env["CASTWAY_EDGE_HEADROOM_MIN_SLOTS"]) == {"EdgeHeadroomMinSlots"}
    assert env["CASTWAY_EDGE_CAPACITY"] == _environment(_container("edge"))[
        "CASTWAY_EDGE_CAPACITY"]
    assert env["CASTWAY_NODE_CAPACITY"] == _environment(_container("ingest"))[
        "CASTWAY_NODE_CAPACITY"]


def test_every_task_runs_the_one_castway_image() -> None:
    """One repository and tag for every task; the edge's tag may be pinned apart
    (EdgeImageTag, empty: the same ImageTag)."""
    images = {json.dumps(c["Image"], sort_keys=True) for _, c in _containers()
              if c["Name"] != "edge"}
    assert len(images) == 1
    assert _refs(_container("origin")["Image"]) == {"ImageRepository", "ImageTag"}
    condition, pinned, same = _container("edge")["Image"]["Fn::If"]
    assert TEMPLATE["Conditions"][condition] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "EdgeImageTag"}, ""]}]}
    assert json.dumps(same, sort_keys=True) in images
    assert pinned == {"Fn::Sub": "${ImageRepository}:${EdgeImageTag}"}


# --- ports ------------------------------------------------------------------------------

def _container_ports(container: str) -> set[int]:
    return {int(p["ContainerPort"]) for p in _container(container).get("PortMappings", [])}


def test_rtmp_path_uses_the_port_the_edge_command_binds() -> None:
    args = _args("edge")
    assert args.command == "edge" and args.host == "0.0.0.0"
    rtmp, http = int(args.rtmp_port), int(args.http_port)
    assert {rtmp, http} <= _container_ports("edge")
    listener = _props("IngestListener")
    group = _props("EdgeTargetGroup")
    assert listener["Protocol"] == "TCP" and int(listener["Port"]) == rtmp == 1935
    assert _refs(listener["DefaultActions"]) == {"EdgeTargetGroup"}
    assert group["Protocol"] == "TCP" and int(group["Port"]) == rtmp
    assert group["TargetType"] == "ip"  # the scheduler registers task IPs
    assert int(group["HealthCheckPort"]) == http  # /readyz is on the HTTP port
    # the scheduler registers an edge at its task's private IPv4 and the one RTMP port
    # of its ECS configuration, both tiers'
    assert _rule_input()["ecs"]["rtmp_port"] == rtmp


def test_edges_relay_to_the_port_the_transcoding_command_binds() -> None:
    args = _args("ingest")
    assert args.command == "ingest"
    rtmp = int(args.rtmp_port)
    assert rtmp in _container_ports("ingest")
    assert _rule_input()["ecs"]["rtmp_port"] == rtmp
    (rule,) = _props("IngestSecurityGroup")["SecurityGroupIngress"]
    assert int(rule["FromPort"]) == int(rule["ToPort"]) == rtmp


def test_nlb_is_cross_zone_over_two_zones() -> None:
    nlb = _props("IngestLoadBalancer")
    assert nlb["Type"] == "network"
    attributes = {a["Key"]: a["Value"] for a in nlb["LoadBalancerAttributes"]}
    assert attributes["load_balancing.cross_zone.enabled"] == "true"
    assert len(nlb["Subnets"]) == 2
    zones = {json.dumps(_props(s["Ref"])["AvailabilityZone"], sort_keys=True)
             for s in nlb["Subnets"]}
    assert len(zones) == 2


def test_http_path_uses_the_port_the_origin_command_binds() -> None:
    args = _args("origin")
    assert args.command == "origin" and args.host == "0.0.0.0"
    port = int(args.http_port)
    assert _container_ports("origin") == {port}
    assert int(_props("OriginTargetGroup")["Port"]) == port
    (binding,) = _props("OriginService")["LoadBalancers"]
    assert binding["ContainerName"] == "origin" and int(binding["ContainerPort"]) == port
    assert _refs(binding["TargetGroupArn"]) == {"OriginTargetGroup"}
    origin_ingress = _props("OriginSecurityGroup")["SecurityGroupIngress"]
    assert [int(r["FromPort"]) for r in origin_ingress] == [port]


def test_worker_command_parses() -> None:
    assert _args("worker").command == "worker"


# --- health checks ------------------------------------------------------------------------

def _container_health_url(container: str) -> str:
    command = " ".join(_container(container)["HealthCheck"]["Command"])
    match = re.search(r"http://(?:127\.0\.0\.1|%s):(\d+)(/\S*?)['\"]", command)
    assert match, command
    return f"{match.group(1)}{match.group(2)}"


def test_health_checks_hit_the_agreed_paths_on_the_bound_ports() -> None:
    for container in ("ingest", "edge", "origin"):
        port = _args(container).http_port
        assert _container_health_url(container) == f"{port}{AGREED_LIVENESS}", container
    assert _props("EdgeTargetGroup")["HealthCheckPath"] == AGREED_READINESS
    assert _props("EdgeTargetGroup")["HealthCheckProtocol"] == "HTTP"
    assert _props("OriginTargetGroup")["HealthCheckPath"] == AGREED_READINESS


def test_the_transcoding_health_check_asks_the_address_the_node_binds() -> None:
    """The node binds its private IPv4 (CASTWAY_HOST from the task metadata), not
    127.0.0.1: the health check reads that address the way the entry point does."""
    health = " ".join(_container("ingest")["HealthCheck"]["Command"])
    (script,) = _container("ingest")["Command"]
    for step in ("os.environ['ECS_CONTAINER_METADATA_URI_V4']",
                 "['Networks'][0]['IPv4Addresses'][0]"):
        assert step in health and step in script, step


async def test_health_paths_are_routes_the_code_serves(tmp_path: Path) -> None:
    """The ingest node's health app and the origin app answer both paths with 200 when
    their back ends are up (a real catalog, live state and storage in tmp_path)."""
    services = Services.open(Settings(data_dir=tmp_path, admin_token="t" * 32))
    try:
        apps = {
            "ingest": create_health_app(services.catalog, services.live,
                                        services.storage, services.registry),
            "origin": create_platform_app(
                services.settings, catalog=services.catalog, live=services.live,
                storage=services.storage, registry=services.registry),
        }
        for name, app in apps.items():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                for path in (AGREED_LIVENESS, AGREED_READINESS):
                    response = await client.get(path)
                    assert response.status_code == 200, (name, path, response.text)
    finally:
        await services.close()


# --- both RTMP tiers: driven by the scheduler, not by an ECS service ---------------------

@pytest.mark.parametrize("container", ["ingest", "edge"])
def test_rtmp_tiers_run_as_scheduler_started_tasks_with_the_longest_stop_timeout(
        container: str) -> None:
    task_definition = _task_definition_of(container)
    for service in _of_type("AWS::ECS::Service").values():
        assert _refs(service["Properties"]["TaskDefinition"]) != {task_definition}
    assert int(_container(container)["StopTimeout"]) == 120  # ECS's maximum
    scaled = {json.dumps(r["Properties"]["ResourceId"], sort_keys=True)
              for r in _of_type("AWS::ApplicationAutoScaling::ScalableTarget").values()}
    assert all("Ingest" not in s and "Edge" not in s for s in scaled)


def test_draining_edge_targets_keep_their_connections() -> None:
    attributes = {a["Key"]: a["Value"]
                  for a in _props("EdgeTargetGroup")["TargetGroupAttributes"]}
    assert attributes["deregistration_delay.connection_termination.enabled"] == "false"
    assert int(attributes["deregistration_delay.timeout_seconds"]) == 3600  # the maximum


def test_the_edge_task_runs_castway_edge_and_heartbeats_as_an_edge() -> None:
    assert _argv("edge")[0] == "edge"
    assert _props(_task_definition_of("edge"))["Family"] == {
        "Fn::Sub": "${AWS::StackName}-edge"}
    # an edge transcodes nothing: small, and its default capacity fits the relay's
    # measured cost (castway bench edge: 6.4 Mbit/s 720p60 publishers, the dearest it
    # measured: the cost follows the message rate) within the scheduler's utilisation
    # target (docs/deploy.md, "Sizing the edge"); the simulator's edge is this one
    from scheduler.simulate import (
        EDGE_COST_60FPS,
        EDGE_TIER_EDGE_CAPACITY,
        EDGE_TIER_EDGE_VCPUS,
    )

    cores = int(PARAMETERS["EdgeCpu"]["Default"]) / 1024
    assert cores <= 0.5
    assert max(int(v) for v in PARAMETERS["EdgeCpu"]["AllowedValues"]) <= 1024  # one loop
    publishers = int(PARAMETERS["EdgeCapacity"]["Default"])
    assert publishers * EDGE_COST_60FPS <= Settings().utilisation_target * cores
    assert (cores, publishers) == (EDGE_TIER_EDGE_VCPUS, EDGE_TIER_EDGE_CAPACITY)
    settings = Settings(edge_capacity=int(PARAMETERS["EdgeCapacity"]["Default"]))
    agent = NodeAgent(settings, MemoryLiveState(), active_broadcasts=lambda: 0,
                      tier=NodeTier.EDGE, capacity=settings.edge_capacity)
    assert agent.tier == NodeTier.EDGE and agent.capacity == settings.edge_capacity


def _target_group_users() -> dict[str, set[str]]:
    """Every resource that names a target group, and the groups it names."""
    groups = set(_of_type("AWS::ElasticLoadBalancingV2::TargetGroup"))
    return {name: _refs(r.get("Properties", {})) & groups for name, r in RESOURCES.items()
            if _refs(r.get("Properties", {})) & groups}


def test_the_nlb_reaches_the_edge_tier_and_nothing_else() -> None:
    users = _target_group_users()
    nlb_listeners = {name for name, r in _of_type(
        "AWS::ElasticLoadBalancingV2::Listener").items()
        if _refs(r["Properties"]["LoadBalancerArn"]) == {"IngestLoadBalancer"}}
    assert nlb_listeners == {"IngestListener", "IngestTlsListener"}
    for listener in nlb_listeners:
        assert users[listener] == {"EdgeTargetGroup"}
    # the edge target group is filled by the scheduler, with edge nodes only
    event = _props("SchedulerTickRule")["Targets"][0]["Input"]["Fn::Sub"][0]
    assert '"edge_target_group_arn": "${EdgeTargetGroup}"' in event
    config = EcsConfig.from_mapping(_rule_input()["ecs"])
    assert config.edge_target_group_arn == "edgetargetgroup"
    assert config.target_group_arn is None and config.route53_zone_id is None
    # and the transcoding tier is in no target group, of the NLB or any other
    for service in _of_type("AWS::ECS::Service").values():
        for binding in service["Properties"].get("LoadBalancers", []):
            assert binding["ContainerName"] not in ("ingest", "edge")


def test_transcoding_tasks_are_reached_from_the_edges_only() -> None:
    rtmp = int(_args("ingest").rtmp_port)
    rules = _props("IngestSecurityGroup")["SecurityGroupIngress"]
    assert [(int(r["FromPort"]), int(r["ToPort"]), _refs(r["SourceSecurityGroupId"]))
            for r in rules] == [(rtmp, rtmp, {"EdgeSecurityGroup"})]
    assert not any("CidrIp" in r or "CidrIpv6" in r or "SourcePrefixListId" in r
                   for r in rules)
    # no other resource opens the transcoding tasks' group
    for name, resource in _of_type("AWS::EC2::SecurityGroupIngress").items():
        assert _refs(resource["Properties"].get("GroupId")) != {"IngestSecurityGroup"}, name
    config = EcsConfig.from_mapping(_rule_input()["ecs"])
    assert config.security_groups == ("ingestsecuritygroup",)
    assert config.edge_security_groups == ("edgesecuritygroup",)
    assert config.assign_public_ip is False
    edge_rules = _props("EdgeSecurityGroup")["SecurityGroupIngress"]
    assert all(_refs(r["SourceSecurityGroupId"]) == {"NlbSecurityGroup"} for r in edge_rules)


def read_proxy_header(data: bytes) -> ProxyHeader:
    """The header a node's reader makes of ``data`` (fed as a socket would, never past
    the header)."""
    reader = ProxyHeaderReader()
    header = None
    while header is None:
        chunk, data = data[:reader.wanted], data[reader.wanted:]
        assert chunk, "the header ended early"
        header = reader.receive_data(chunk)
    assert not data, "bytes after the header"
    return header


class _TaskMetadata(BaseHTTPRequestHandler):
    """ECS task metadata endpoint v4, the container document of a Fargate task
    (awsvpc), as AWS documents it."""

    ADDRESS = "10.40.34.17"

    def do_GET(self) -> None:
        body = json.dumps({
            "DockerId": "cd189a933e5849daa93386466019ab50-2495160603",
            "Name": "ingest", "Image": "castway:v1", "DesiredStatus": "RUNNING",
            "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": [self.ADDRESS],
                          "AttachmentIndex": 0, "MACAddress": "0a:de:f6:10:51:e5",
                          "IPv4SubnetCIDRBlock": "10.40.32.0/20",
                          "PrivateDNSName": f"ip-{self.ADDRESS.replace('.', '-')}.ec2.internal",
                          "SubnetGatewayIpv4Address": "10.40.32.1/20"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _run_entry_point(tmp_path: Path, metadata_uri: str) -> tuple[int, Path]:
    """The ingest container's ``sh -c`` script, with ``python`` the test's interpreter
    and a ``castway`` that writes the CASTWAY_HOST and arguments it was given to the
    returned path."""
    (script,) = _container("ingest")["Command"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    seen = tmp_path / "castway.argv"
    castway = bin_dir / "castway"
    castway.write_text(f'#!/bin/sh\nprintf "%s\\n" "$CASTWAY_HOST" "$@" > {seen}\n')
    castway.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "ECS_CONTAINER_METADATA_URI_V4": metadata_uri}
    done = subprocess.run(["sh", "-c", script], env=env, timeout=30, capture_output=True)
    return done.returncode, seen


def test_transcoding_tasks_heartbeat_their_private_address(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The entry point's script, run for real: it asks the task metadata endpoint for the
    task's private IPv4 and hands castway ``CASTWAY_HOST``; the node agent then
    heartbeats that address and the RTMP port, which is where the edges connect."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TaskMetadata)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        code, seen = _run_entry_point(
            tmp_path, f"http://127.0.0.1:{server.server_port}/v4/cd189a933e58")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert code == 0
    host, *argv = seen.read_text().splitlines()
    assert host == _TaskMetadata.ADDRESS
    assert argv == _argv("ingest")

    for k in list(os.environ):
        if k.startswith("CASTWAY_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CASTWAY_HOST", host)
    settings = _settings(build_parser().parse_args(argv))  # the flags on top, as castway does
    agent = NodeAgent(settings, MemoryLiveState(), active_broadcasts=lambda: 0)
    assert agent.tier == NodeTier.TRANSCODE
    assert agent.address == f"{_TaskMetadata.ADDRESS}:{_rule_input()['ecs']['rtmp_port']}"


def test_a_transcoding_task_without_its_address_does_not_start(tmp_path: Path) -> None:
    """No metadata endpoint answer: the task exits (and the scheduler replaces it)
    rather than run a node that would heartbeat the image's CASTWAY_HOST, 0.0.0.0."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    code, seen = _run_entry_point(tmp_path, f"http://127.0.0.1:{port}/v4/x")
    assert code != 0
    assert not seen.exists()


# --- CloudFront -----------------------------------------------------------------------------

def _origin_query_params() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "origin").glob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r"query_params\.get\(\s*\"([^\"]+)\"", text))
        names |= set(re.findall(r"_\w*param\w*\(\s*request\s*,\s*\"([^\"]+)\"", text))
    return names


def test_live_cache_policy_honours_cache_control_and_keys_the_ll_hls_directives() -> None:
    config = _props("Distribution")["DistributionConfig"]
    default = config["DefaultCacheBehavior"]
    assert _refs(default["CachePolicyId"]) == {"LiveCachePolicy"}
    assert _refs(default["TargetOriginId"]) == set() and default["TargetOriginId"] == "origin-alb"
    policy = _props("LiveCachePolicy")["CachePolicyConfig"]
    assert int(policy["MinTTL"]) == 0 and int(policy["DefaultTTL"]) == 0
    assert int(policy["MaxTTL"]) >= 31536000  # immutable segments keep their year
    query = policy["ParametersInCacheKeyAndForwardedToOrigin"]["QueryStringsConfig"]
    assert query["QueryStringBehavior"] == "whitelist"
    keyed = set(query["QueryStrings"])
    assert {"_HLS_msn", "_HLS_part", "_HLS_skip"} <= keyed
    assert _origin_query_params() <= keyed, _origin_query_params() - keyed
    assert {"Expires", "Policy", "Signature", "Key-Pair-Id"} <= keyed  # origin-side verify


def test_private_live_and_vod_signatures_reach_the_origin_through_the_cdn() -> None:
    """Private live channels and private VODs are checked by the origin (origin.access):
    every path that can serve them goes through the live cache policy, which must forward
    (and key on) the signed URL's query and the signed cookies."""
    from castway.signing import COOKIE_KEY_PAIR_ID, COOKIE_POLICY, COOKIE_SIGNATURE

    config = _props("Distribution")["DistributionConfig"]
    patterns = {b["PathPattern"] for b in config["CacheBehaviors"]}
    assert not {p for p in patterns if p.startswith(("/hls", "/vod", "/watch"))}, patterns
    params = _props("LiveCachePolicy")["CachePolicyConfig"][
        "ParametersInCacheKeyAndForwardedToOrigin"]
    assert params["CookiesConfig"]["CookieBehavior"] == "whitelist"
    assert {COOKIE_POLICY, COOKIE_SIGNATURE, COOKIE_KEY_PAIR_ID} <= set(
        params["CookiesConfig"]["Cookies"])
    assert {"Expires", "Policy", "Signature", "Key-Pair-Id"} <= set(
        params["QueryStringsConfig"]["QueryStrings"])


def test_archive_is_served_from_s3_only_with_a_signature() -> None:
    config = _props("Distribution")["DistributionConfig"]
    origins = {o["Id"]: o for o in config["Origins"]}
    archive = next(b for b in config["CacheBehaviors"] if b["PathPattern"] == "/broadcasts/*")
    assert _refs(origins[archive["TargetOriginId"]]["DomainName"]) == {"ArchiveBucket"}
    assert _refs(archive["TrustedKeyGroups"]) == {"SigningKeyGroup"}
    assert _refs(_props("SigningKeyGroup")["KeyGroupConfig"]["Items"]) == {
        "SigningPublicKeyResource"}
    assert _refs(_props("SigningPublicKeyResource")["PublicKeyConfig"]["EncodedKey"]) == {
        "SigningPublicKey"}
    origin_env = _environment(_container("origin"))
    assert _refs(origin_env["CASTWAY_SIGNING_KEY_ID"]) == {"SigningPublicKeyResource"}
    assert _refs(origin_env["CASTWAY_SIGNING_KEY"]) == {"SigningKeySecretArn"}


def test_alb_only_takes_cloudfronts_requests() -> None:
    ingress = _props("AlbSecurityGroup")["SecurityGroupIngress"]
    assert all("SourcePrefixListId" in rule for rule in ingress)
    default = _props("OriginListener")["DefaultActions"][0]
    assert default["Type"] == "fixed-response"
    header = next(o for o in _props("Distribution")["DistributionConfig"]["Origins"]
                  if o["Id"] == "origin-alb")["OriginCustomHeaders"][0]
    condition = _props("OriginFromCloudFront")["Conditions"][0]["HttpHeaderConfig"]
    assert condition["HttpHeaderName"] == header["HeaderName"]
    assert _refs(condition["Values"]) == _refs(header["HeaderValue"]) == {"OriginVerifyToken"}


# --- scheduler -------------------------------------------------------------------------------

def _rule_input() -> dict[str, Any]:
    target = _props("SchedulerTickRule")["Targets"][0]
    parsed: dict[str, Any] = json.loads(_render(target["Input"]))
    return parsed


def test_scheduler_ticks_every_minute_with_the_real_handler() -> None:
    rule = _props("SchedulerTickRule")
    assert rule["ScheduleExpression"] == "rate(1 minute)"
    assert rule["State"] == "ENABLED"
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["SchedulerFunction", "Arn"]}
    function = _props("SchedulerFunction")
    assert function["Handler"] == "scheduler.lambda_handler.handler"
    module, _, attribute = function["Handler"].rpartition(".")
    assert callable(getattr(importlib.import_module(module), attribute))
    assert function["Runtime"] == "python3.11"  # the image's Python (Dockerfile)
    assert int(function["Timeout"]) < 60
    permission = _props("SchedulerInvokePermission")
    assert permission["Principal"] == "events.amazonaws.com"
    assert _refs(permission["SourceArn"]) == {"SchedulerTickRule"}


def test_rule_input_is_an_ecs_configuration_the_backend_accepts() -> None:
    config = EcsConfig.from_mapping(_rule_input()["ecs"])
    assert config.container_name == "ingest" and config.edge_container_name == "edge"
    assert config.launch_type == "FARGATE"
    for container in ("ingest", "edge"):
        td = _props(_task_definition_of(container))
        assert td["RequiresCompatibilities"] == ["FARGATE"]
        assert config.rtmp_port == int(_args(container).rtmp_port)
    assert config.route53_zone_id is None  # routing is the NLB target group only
    assert not config.assign_public_ip
    text = _props("SchedulerTickRule")["Targets"][0]["Input"]["Fn::Sub"][0]
    assert '"task_definition": "${IngestTaskDefinition}"' in text
    assert '"edge_task_definition": "${EdgeTaskDefinition}"' in text
    assert '"cluster": "${Cluster}"' in text
    assert '"desired_version": "${ImageTag}"' in text


def _allowed_actions() -> dict[str, dict[str, Any]]:
    statements: dict[str, dict[str, Any]] = {}
    for policy in _props("SchedulerRole")["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            actions = statement["Action"]
            for action in [actions] if isinstance(actions, str) else actions:
                statements[action] = statement
    return statements


def _boto_calls(path: Path, client: str) -> set[str]:
    text = path.read_text()
    calls = set(re.findall(rf"self\.{client}\.(\w+)\(", text))
    calls |= set(re.findall(rf"self\.{client}\.get_paginator\(\"(\w+)\"\)", text))
    calls.discard("get_paginator")
    calls.discard("close")
    return {"".join(part.title() for part in call.split("_")) for call in calls}


def test_scheduler_may_do_exactly_what_its_backend_calls() -> None:
    backend = ROOT / "scheduler" / "backends" / "ecs.py"
    needed = {f"ecs:{c}" for c in _boto_calls(backend, "ecs")}
    needed |= {f"elasticloadbalancing:{c}" for c in _boto_calls(backend, "elb")}
    needed |= {"cloudwatch:PutMetricData", "iam:PassRole"}
    allowed = _allowed_actions()
    assert needed <= set(allowed), needed - set(allowed)
    # and nothing beyond it (DescribeTargetHealth: read-only, for operators' dashboards)
    assert set(allowed) - needed <= {"elasticloadbalancing:DescribeTargetHealth"}
    assert not any(a.endswith("*") for a in allowed)


def test_scheduler_permissions_are_scoped_to_its_cluster_roles_and_target_group() -> None:
    allowed = _allowed_actions()
    for action in ("ecs:RunTask", "ecs:StopTask", "ecs:DescribeTasks", "ecs:ListTasks"):
        assert _refs(allowed[action]["Condition"]) == {"Cluster"}, action
    families = sorted(_render(r).rsplit("/", 1)[1]
                      for r in allowed["ecs:RunTask"]["Resource"])
    assert families == ["aws-stackname-edge:*", "aws-stackname-ingest:*"]
    assert {_render(_props(_task_definition_of(c))["Family"]) + ":*"
            for c in ("ingest", "edge")} == set(families)
    roles: set[str] = set()
    for container in ("ingest", "edge"):
        td = _props(_task_definition_of(container))
        roles |= _refs(td.get("TaskRoleArn")) | _refs(td["ExecutionRoleArn"])
    assert _refs(allowed["iam:PassRole"]["Resource"]) == roles
    assert allowed["iam:PassRole"]["Condition"]["StringEquals"][
        "iam:PassedToService"] == "ecs-tasks.amazonaws.com"
    for action in ("elasticloadbalancing:RegisterTargets",
                   "elasticloadbalancing:DeregisterTargets"):
        assert _refs(allowed[action]["Resource"]) == {"EdgeTargetGroup"}
    namespace = _rule_input()["cloudwatch_namespace"]
    assert allowed["cloudwatch:PutMetricData"]["Condition"]["StringEquals"][
        "cloudwatch:namespace"] == namespace


# --- data stores -------------------------------------------------------------------------------

def test_stateful_services_survive_a_zone() -> None:
    assert _props("Database")["MultiAZ"] is True
    assert _props("Database")["Engine"] == "postgres"
    assert _props("Database")["PubliclyAccessible"] is False
    redis = _props("Redis")
    assert redis["MultiAZEnabled"] is True and redis["AutomaticFailoverEnabled"] is True
    assert int(redis["NumCacheClusters"]) >= 2
    rules = _props("ArchiveBucket")["LifecycleConfiguration"]["Rules"]
    assert {r["Id"] for r in rules} >= {"abort-incomplete-uploads", "tier-archived-broadcasts"}


def test_cdn_answers_cors_like_the_origin_does() -> None:
    app_module = pytest.importorskip("origin.app")
    config = _props("Distribution")["DistributionConfig"]
    for behavior in [config["DefaultCacheBehavior"],
                     *(b for b in config["CacheBehaviors"] if b["PathPattern"] != "/api/*")]:
        assert _refs(behavior["ResponseHeadersPolicyId"]) == {"PlaybackCorsPolicy"}
    cors = _props("PlaybackCorsPolicy")["ResponseHeadersPolicyConfig"]["CorsConfig"]
    assert cors["AccessControlAllowOrigins"]["Items"] == ["*"]
    assert cors["OriginOverride"] is False
    assert cors["AccessControlExposeHeaders"]["Items"] == list(app_module.CORS_EXPOSE)


def test_scheduler_and_load_balancers_raise_alarms() -> None:
    alarms = _of_type("AWS::CloudWatch::Alarm")
    watched = {name: _refs(a["Properties"]["Dimensions"]) for name, a in alarms.items()}
    assert {"SchedulerFunction"} in watched.values()
    assert any("EdgeTargetGroup" in refs for refs in watched.values())
    assert any("OriginTargetGroup" in refs for refs in watched.values())
    for alarm in alarms.values():
        assert _refs(alarm["Properties"]["AlarmActions"]) == {"AlarmTopic"}


def test_every_parameter_is_documented() -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text()
    table = docs.split("### Parameters", 1)[1].split("\n### ", 1)[0]
    missing = [name for name in PARAMETERS if f"`{name}`" not in table]
    assert not missing, missing


def test_documented_deploy_command_sets_every_required_parameter() -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text()
    command = docs.split("aws cloudformation deploy", 1)[1].split("```", 1)[0]
    assert "--template-file deploy/aws/castway.yaml" in command
    assert "CAPABILITY_IAM" in command
    given = set(re.findall(r"\b([A-Z][A-Za-z]+)=", command))
    required = {name for name, p in PARAMETERS.items() if "Default" not in p}
    assert required <= given, required - given
    assert given <= set(PARAMETERS), given - set(PARAMETERS)


# --- RTMPS and the PROXY protocol -------------------------------------------------------

def test_rtmps_is_a_tls_listener_with_the_acm_certificate_into_the_same_targets() -> None:
    listener = TEMPLATE["Resources"]["IngestTlsListener"]
    assert listener["Condition"] == "HasIngestTls"
    props = listener["Properties"]
    assert props["Protocol"] == "TLS" and int(props["Port"]) == 443
    assert _refs(props["Certificates"]) == {"IngestCertificateArn"}
    assert _refs(props["DefaultActions"]) == {"EdgeTargetGroup"}
    assert _refs(props["LoadBalancerArn"]) == {"IngestLoadBalancer"}
    assert "TLS13" in props["SslPolicy"]
    assert TEMPLATE["Conditions"]["HasIngestTls"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "IngestCertificateArn"}, ""]}]}
    # A certificate names a host: the template refuses one without IngestDomainName.
    rule = TEMPLATE["Rules"]["IngestTlsNeedsDomain"]
    assert _refs(rule["Assertions"]) == {"IngestDomainName"}


def test_the_nlb_sends_proxy_v2_and_the_edge_tasks_expect_it() -> None:
    attributes = {a["Key"]: a["Value"]
                  for a in _props("EdgeTargetGroup")["TargetGroupAttributes"]}
    assert attributes["proxy_protocol_v2.enabled"] == "true"
    env = _environment(_container("edge"))
    assert env["CASTWAY_PROXY_PROTOCOL"] == "true"
    assert Settings(proxy_protocol=env["CASTWAY_PROXY_PROTOCOL"]).proxy_protocol


def test_the_edges_name_each_publisher_to_the_transcoding_tasks() -> None:
    """Each relay begins with a PROXY v2 header naming its publisher, which the
    transcoding node expects (and trusts: only the edges reach it), so its per-address
    limits and publish authorization see the publisher, not the edge."""
    from ingest.edge.link import proxy_header

    edge, ingest = _environment(_container("edge")), _environment(_container("ingest"))
    assert Settings(relay_proxy_protocol=edge["CASTWAY_RELAY_PROXY_PROTOCOL"]
                    ).relay_proxy_protocol
    assert Settings(proxy_protocol=ingest["CASTWAY_PROXY_PROTOCOL"]).proxy_protocol
    assert "CASTWAY_MAX_CONNECTIONS_PER_IP" not in ingest  # a publisher's limit again
    # the node heartbeats its private IPv4, so the header names the publisher (an
    # address the edge could not put in a header would make it a LOCAL one)
    node = f"{_TaskMetadata.ADDRESS}:{_rule_input()['ecs']['rtmp_port']}"
    header = read_proxy_header(proxy_header("203.0.113.7:50122", node))
    assert header.source == ("203.0.113.7", 50122)
    assert header.destination == (_TaskMetadata.ADDRESS, 1935)


def test_rtmps_is_open_to_publishers_and_the_edge_tasks_only_to_the_nlb() -> None:
    nlb_rules = _props("NlbSecurityGroup")["SecurityGroupIngress"]
    [tls_rule] = [r["Fn::If"][1] for r in nlb_rules if "Fn::If" in r]
    assert int(tls_rule["FromPort"]) == 443 and tls_rule["CidrIp"] == "0.0.0.0/0"
    task_rules = _props("EdgeSecurityGroup")["SecurityGroupIngress"]
    assert all(_refs(r.get("SourceSecurityGroupId")) == {"NlbSecurityGroup"}
               for r in task_rules), task_rules


@pytest.mark.parametrize("container", ["edge", "ingest", "origin"])
def test_the_rtmps_url_printed_and_in_the_api_is_the_tls_listeners(container: str) -> None:
    value = _environment(_container(container))["CASTWAY_PUBLIC_RTMPS_URL"]
    condition, on, off = value["Fn::If"]
    assert condition == "HasIngestTls" and off == ""
    assert _render(on) == "rtmps://ingestdomainname:443/live"
