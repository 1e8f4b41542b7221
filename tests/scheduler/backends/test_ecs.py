"""ECS backend against moto: RunTask / DescribeTasks / StopTask, NLB targets, Route 53,
and a whole deploy driven by the scheduler's ticks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws
from moto.ec2.utils import generate_instance_identity_document
from moto.moto_api import state_manager

from castway.live.memory import MemoryLiveState
from castway.model import Node, NodeState, NodeTier, utcnow
from castway.settings import Settings
from scheduler.backends.base import BackendError
from scheduler.backends.ecs import EcsBackend, EcsConfig
from scheduler.tick import Scheduler

REGION = "us-east-1"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_DEFAULT_REGION", REGION)):
        monkeypatch.setenv(key, value)
    # moto walks a task towards STOPPED one step per DescribeTasks; an ingest task runs
    # until it is stopped, so keep it RUNNING until StopTask
    state_manager.set_transition(model_name="ecs::task",
                                 transition={"progression": "manual", "times": 10**9})
    with mock_aws():
        ecs = boto3.client("ecs", region_name=REGION)
        ec2 = boto3.resource("ec2", region_name=REGION)
        ecs.create_cluster(clusterName="castway")
        instance = ec2.create_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)[0]
        ecs.register_container_instance(
            cluster="castway",
            instanceIdentityDocument=json.dumps(generate_instance_identity_document(instance)))
        for family in ("castway-ingest", "castway-ingest-v2"):
            ecs.register_task_definition(family=family, containerDefinitions=[
                {"name": "ingest", "image": f"castway:{family}", "memory": 512}])
        ecs.register_task_definition(family="castway-edge", containerDefinitions=[
            {"name": "edge", "image": "castway:edge", "memory": 512}])
        client = boto3.client("ec2", region_name=REGION)
        vpc = client.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [client.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24",
                                        AvailabilityZone=f"{REGION}{az}")["Subnet"]["SubnetId"]
                   for i, az in ((1, "a"), (2, "b"))]
        elb = boto3.client("elbv2", region_name=REGION)
        elb.create_load_balancer(Name="ingest", Subnets=subnets, Type="network",
                                 Scheme="internet-facing")
        tg = elb.create_target_group(Name="ingest-rtmp", Protocol="TCP", Port=1935,
                                     VpcId=vpc, TargetType="ip")["TargetGroups"][0]
        edge_tg = elb.create_target_group(Name="edge-rtmp", Protocol="TCP", Port=1935,
                                          VpcId=vpc, TargetType="ip")["TargetGroups"][0]
        zone = boto3.client("route53", region_name=REGION).create_hosted_zone(
            Name="example.com.", CallerReference="castway")["HostedZone"]["Id"]
        yield {"target_group_arn": tg["TargetGroupArn"], "zone": zone,
               "edge_target_group_arn": edge_tg["TargetGroupArn"]}
    state_manager.unset_transition(model_name="ecs::task")


def config(aws: dict[str, str], **kw: Any) -> EcsConfig:
    values: dict[str, Any] = {"cluster": "castway", "task_definition": "castway-ingest",
                              "launch_type": "EC2", "target_group_arn": aws["target_group_arn"],
                              "route53_zone_id": aws["zone"],
                              "route53_record_name": "ingest.example.com.", "region": REGION}
    values.update(kw)
    return EcsConfig(**values)


def targets(aws: dict[str, str], group: str = "target_group_arn") -> set[str]:
    elb = boto3.client("elbv2", region_name=REGION)
    health = elb.describe_target_health(TargetGroupArn=aws[group])
    return {f"{d['Target']['Id']}:{d['Target']['Port']}"
            for d in health["TargetHealthDescriptions"]}


def dns(aws: dict[str, str], name: str | None = None) -> dict[str, str]:
    sets = boto3.client("route53", region_name=REGION).list_resource_record_sets(
        HostedZoneId=aws["zone"])["ResourceRecordSets"]
    return {r["SetIdentifier"]: r["ResourceRecords"][0]["Value"]
            for r in sets if r["Type"] == "A" and name in (None, r["Name"])}


def test_start_runs_one_task_per_node_with_its_id_and_version(aws: dict[str, str]) -> None:
    backend = EcsBackend(config(aws))
    started = backend.start(2, "v1")
    listed = backend.list_instances()
    assert {i.node_id for i in listed} == {i.node_id for i in started}
    assert {i.version for i in listed} == {"v1"}
    ecs = boto3.client("ecs", region_name=REGION)
    arns = ecs.list_tasks(cluster="castway", startedBy="castway-scheduler")["taskArns"]
    tasks = ecs.describe_tasks(cluster="castway", tasks=arns)["tasks"]
    envs = [{e["name"]: e["value"] for e in t["overrides"]["containerOverrides"][0]["environment"]}
            for t in tasks]
    assert sorted(e["CASTWAY_NODE_ID"] for e in envs) == sorted(i.node_id for i in started)
    assert all(t["taskDefinitionArn"].endswith("castway-ingest:1") for t in tasks)


def test_the_task_definition_can_follow_the_version(aws: dict[str, str]) -> None:
    backend = EcsBackend(config(aws, task_definition="castway-ingest-{version}"))
    backend.start(1, "v2")
    ecs = boto3.client("ecs", region_name=REGION)
    arns = ecs.list_tasks(cluster="castway")["taskArns"]
    [task] = ecs.describe_tasks(cluster="castway", tasks=arns)["tasks"]
    assert task["taskDefinitionArn"].endswith("castway-ingest-v2:1")


def test_stop_stops_the_nodes_task_only(aws: dict[str, str]) -> None:
    backend = EcsBackend(config(aws))
    a, b = backend.start(2, "v1")
    backend.stop(a.node_id)
    backend.stop(a.node_id)  # idempotent
    backend.stop("no-such-node")
    assert [i.node_id for i in backend.list_instances()] == [b.node_id]


def test_routing_registers_and_deregisters_target_and_dns(aws: dict[str, str]) -> None:
    backend = EcsBackend(config(aws))
    node = Node(id="n1", image_version="v1", address="10.0.1.15:1935", state=NodeState.ACTIVE)
    backend.set_routable(node, True)
    backend.set_routable(node, True)  # idempotent
    assert targets(aws) == {"10.0.1.15:1935"}
    assert dns(aws) == {"n1": "10.0.1.15"}
    backend.set_routable(node, False)
    backend.set_routable(node, False)
    assert targets(aws) == set() and dns(aws) == {}


def test_edge_nodes_run_their_own_task_and_are_routed_through_their_own_group(
        aws: dict[str, str]) -> None:
    backend = EcsBackend(config(aws, edge_task_definition="castway-edge",
                                edge_target_group_arn=aws["edge_target_group_arn"],
                                edge_route53_record_name="rtmp.example.com."))
    [edge] = backend.start(1, "v1", tier=NodeTier.EDGE)
    [ingest] = backend.start(1, "v1")
    assert {(i.node_id, i.tier) for i in backend.list_instances()} == {
        (edge.node_id, NodeTier.EDGE), (ingest.node_id, NodeTier.TRANSCODE)}
    ecs = boto3.client("ecs", region_name=REGION)
    arns = ecs.list_tasks(cluster="castway", startedBy="castway-scheduler")["taskArns"]
    by_name = {t["overrides"]["containerOverrides"][0]["name"]: t
               for t in ecs.describe_tasks(cluster="castway", tasks=arns)["tasks"]}
    assert by_name["edge"]["taskDefinitionArn"].endswith("castway-edge:1")
    assert by_name["ingest"]["taskDefinitionArn"].endswith("castway-ingest:1")
    node = Node(id=edge.node_id, image_version="v1", address="10.0.1.16:1935",
                state=NodeState.ACTIVE, tier=NodeTier.EDGE)
    backend.set_routable(node, True)
    assert targets(aws, "edge_target_group_arn") == {"10.0.1.16:1935"}
    assert targets(aws) == set()  # publishers reach the edges, not the transcoders
    assert dns(aws, "rtmp.example.com.") == {edge.node_id: "10.0.1.16"}
    assert dns(aws, "ingest.example.com.") == {}
    backend.set_routable(node, False)
    assert targets(aws, "edge_target_group_arn") == set() and dns(aws) == {}


def test_edge_nodes_need_an_edge_task_definition(aws: dict[str, str]) -> None:
    with pytest.raises(BackendError, match="edge_task_definition"):
        EcsBackend(config(aws)).start(1, "v1", tier=NodeTier.EDGE)


def test_config_from_an_eventbridge_input_refuses_unknown_keys() -> None:
    cfg = EcsConfig.from_mapping({"cluster": "c", "task_definition": "t",
                                  "subnets": ["s1"], "extra_env": {"A": "1"},
                                  "edge_security_groups": ["sg-edge"]})
    assert cfg.subnets == ("s1",) and cfg.extra_env == (("A", "1"),)
    assert cfg.edge_security_groups == ("sg-edge",)
    with pytest.raises(BackendError):
        EcsConfig.from_mapping({"cluster": "c", "task_definition": "t", "clustre": "x"})
    with pytest.raises(BackendError):
        EcsConfig.from_mapping({"cluster": "c"})


async def test_a_deploy_through_ticks_makes_the_right_calls(aws: dict[str, str],
                                                          tmp_path: Path) -> None:
    live = MemoryLiveState()
    backend = EcsBackend(config(aws))
    settings = Settings(data_dir=tmp_path, image_version="v1", node_capacity=8)
    clock = [utcnow()]
    scheduler = Scheduler(settings, live, backend, clock=lambda: clock[0])

    async def beat(node_id: str, version: str, address: str, state: NodeState,
                   active: int) -> None:
        await live.heartbeat(Node(id=node_id, image_version=version, address=address,
                                  state=state, active_broadcasts=active,
                                  heartbeat_at=clock[0]), 90)

    result = await scheduler.tick()  # empty fleet: start one
    assert result.decision is not None and result.errors == ()
    [old] = backend.list_instances()
    await beat(old.node_id, "v1", "10.0.1.15:1935", NodeState.ACTIVE, 3)
    await scheduler.tick()  # active: into the load balancer
    assert targets(aws) == {"10.0.1.15:1935"}

    await scheduler.tick("v2")  # deploy: the new version starts first
    new = [i for i in backend.list_instances() if i.version == "v2"]
    assert len(new) == 1 and targets(aws) == {"10.0.1.15:1935"}
    await beat(new[0].node_id, "v2", "10.0.2.20:1935", NodeState.ACTIVE, 0)
    await scheduler.tick("v2")  # new one registered; the old one takes publishes meanwhile
    assert targets(aws) == {"10.0.1.15:1935", "10.0.2.20:1935"}
    assert await live.get_node_command(old.node_id) is None
    clock[0] += timedelta(seconds=backend.register_delay_s)  # health checks passed
    await beat(old.node_id, "v1", "10.0.1.15:1935", NodeState.ACTIVE, 3)
    await beat(new[0].node_id, "v2", "10.0.2.20:1935", NodeState.ACTIVE, 0)
    await scheduler.tick("v2")  # now the old one is drained
    assert targets(aws) == {"10.0.2.20:1935"}
    assert await live.get_node_command(old.node_id) == "drain"
    assert {i.node_id for i in backend.list_instances()} == {old.node_id, new[0].node_id}

    await beat(old.node_id, "v1", "10.0.1.15:1935", NodeState.DRAINING, 1)
    await scheduler.tick("v2")  # a broadcast is still live: the task stays
    assert {i.node_id for i in backend.list_instances()} == {old.node_id, new[0].node_id}
    await beat(old.node_id, "v1", "10.0.1.15:1935", NodeState.DRAINING, 0)
    await scheduler.tick("v2")  # its last broadcast ended: StopTask
    assert [i.node_id for i in backend.list_instances()] == [new[0].node_id]
    assert await live.get_node_command(old.node_id) == "stop"
    assert dns(aws) == {new[0].node_id: "10.0.2.20"}


def test_an_edge_task_gets_the_edge_security_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    # botocore's Stubber: the exact RunTask an edge node is launched with
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    ecs = boto3.client("ecs", region_name=REGION)
    stub = Stubber(ecs)
    stub.add_response("run_task", {"tasks": [{"taskArn": "arn:task/1"}], "failures": []}, {
        "cluster": "castway", "taskDefinition": "castway-edge-v3", "count": 1,
        "startedBy": "castway-scheduler", "launchType": "FARGATE",
        "overrides": {"containerOverrides": [{"name": "edge", "environment": [
            {"name": "CASTWAY_NODE_ID", "value": ANY},
            {"name": "CASTWAY_IMAGE_VERSION", "value": "v3"},
            {"name": "CASTWAY_NODE_TIER", "value": "edge"}]}]},
        "networkConfiguration": {"awsvpcConfiguration": {
            "subnets": ["subnet-a"], "securityGroups": ["sg-edge"],
            "assignPublicIp": "DISABLED"}}})
    backend = EcsBackend(EcsConfig(cluster="castway", task_definition="castway-ingest",
                                   subnets=("subnet-a",), security_groups=("sg-ingest",),
                                   edge_task_definition="castway-edge-{version}",
                                   edge_security_groups=("sg-edge",)),
                         client_factory=lambda service, **kw: ecs)
    with stub:
        [edge] = backend.start(1, "v3", tier=NodeTier.EDGE)
    stub.assert_no_pending_responses()
    assert edge.tier == NodeTier.EDGE and edge.node_id.startswith("ecs-")
