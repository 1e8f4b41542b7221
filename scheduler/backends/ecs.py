"""Ingest nodes as Amazon ECS tasks behind an NLB target group (boto3).

- start: one ``RunTask`` per node (each gets its own ``CASTWAY_NODE_ID`` and
  ``CASTWAY_IMAGE_VERSION`` through container overrides); the task definition may
  contain ``{version}`` (e.g. ``castway-ingest:{version}``) to pick the image;
- list: ``ListTasks`` (startedBy the scheduler, RUNNING) + ``DescribeTasks``;
- stop: ``StopTask``;
- routing: ``RegisterTargets`` / ``DeregisterTargets`` on the NLB target group (target
  type ``ip``: the task's private IPv4 and the RTMP port), and optionally one
  multivalue-answer A record per node in a Route 53 hosted zone.

With an edge tier (scheduler.tiers) edge nodes run their own task definition
(``edge_task_definition``, container ``edge_container_name``), carry
``CASTWAY_NODE_TIER=edge`` in their overrides (how :meth:`EcsBackend.list_instances`
tells them apart), and are routed through their own target group and DNS name
(``edge_target_group_arn``, ``edge_route53_record_name``): publishers reach the edges;
the transcoding nodes' own target group and record are optional behind them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from castway.model import Node, NodeTier, new_id, utcnow
from scheduler.backends.base import BackendError, Instance

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_elbv2 import ElasticLoadBalancingv2Client
    from mypy_boto3_route53 import Route53Client

logger = logging.getLogger(__name__)

STARTED_BY = "castway-scheduler"
NODE_ID_ENV = "CASTWAY_NODE_ID"
VERSION_ENV = "CASTWAY_IMAGE_VERSION"
TIER_ENV = "CASTWAY_NODE_TIER"  # set on edge tasks only: a task without it is transcoding


@dataclass(frozen=True, slots=True)
class EcsConfig:
    cluster: str
    task_definition: str  # may contain "{version}"
    container_name: str = "ingest"
    launch_type: str = "FARGATE"
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    assign_public_ip: bool = False
    rtmp_port: int = 1935
    target_group_arn: str | None = None
    route53_zone_id: str | None = None
    route53_record_name: str | None = None  # e.g. "ingest.example.com."
    route53_ttl_s: int = 30
    # from register_targets to new connections: the target group's health checks
    # (interval x healthy threshold) plus the registration itself
    register_delay_s: float = 90.0
    region: str = "us-east-1"
    endpoint_url: str | None = None
    extra_env: tuple[tuple[str, str], ...] = field(default=())
    # the edge tier: its task definition (may contain "{version}"), container, routing
    edge_task_definition: str | None = None
    edge_container_name: str = "edge"
    edge_security_groups: tuple[str, ...] = ()  # default: security_groups
    edge_target_group_arn: str | None = None
    edge_route53_record_name: str | None = None  # e.g. "rtmp.example.com."

    @classmethod
    def from_mapping(cls, raw: dict[str, Any]) -> EcsConfig:
        """From an EventBridge rule's constant input or a JSON file; unknown keys refused."""
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise BackendError(f"unknown ECS settings: {sorted(unknown)}")
        if "cluster" not in raw or "task_definition" not in raw:
            raise BackendError("ECS backend needs 'cluster' and 'task_definition'")
        values = dict(raw)
        for key in ("subnets", "security_groups", "edge_security_groups"):
            if key in values:
                values[key] = tuple(values[key])
        if "extra_env" in values:
            values["extra_env"] = tuple(tuple(kv) for kv in dict(values["extra_env"]).items())
        return cls(**values)


class EcsBackend:
    def __init__(self, config: EcsConfig, *,
                 client_factory: Callable[..., Any] | None = None) -> None:
        import boto3

        self.config = config
        self.register_delay_s = config.register_delay_s
        factory = client_factory or boto3.client
        kwargs: dict[str, Any] = {"region_name": config.region}
        if config.endpoint_url:
            kwargs["endpoint_url"] = config.endpoint_url
        self.ecs: ECSClient = factory("ecs", **kwargs)
        self.elb: ElasticLoadBalancingv2Client | None = (
            factory("elbv2", **kwargs)
            if config.target_group_arn or config.edge_target_group_arn else None)
        self.route53: Route53Client | None = (
            factory("route53", **kwargs) if config.route53_zone_id else None)

    # --- tasks -----------------------------------------------------------------------
    def _tasks(self) -> list[Any]:
        arns: list[str] = []
        for page in self.ecs.get_paginator("list_tasks").paginate(
                cluster=self.config.cluster, startedBy=STARTED_BY, desiredStatus="RUNNING"):
            arns.extend(page["taskArns"])
        tasks: list[Any] = []
        for i in range(0, len(arns), 100):
            tasks.extend(self.ecs.describe_tasks(cluster=self.config.cluster,
                                                 tasks=arns[i:i + 100])["tasks"])
        return tasks

    @staticmethod
    def _env(task: Any) -> dict[str, str]:
        env: dict[str, str] = {}
        for override in task.get("overrides", {}).get("containerOverrides", []):
            for item in override.get("environment", []):
                env[item["name"]] = item["value"]
        return env

    def _address(self, task: Any) -> str:
        for attachment in task.get("attachments", []):
            for detail in attachment.get("details", []):
                if detail.get("name") == "privateIPv4Address":
                    return f"{detail['value']}:{self.config.rtmp_port}"
        return ""

    def list_instances(self) -> list[Instance]:
        out = []
        for task in self._tasks():
            if task.get("desiredStatus") == "STOPPED" or task.get("lastStatus") == "STOPPED":
                continue
            env = self._env(task)
            node_id = env.get(NODE_ID_ENV)
            if node_id is None:
                continue  # started by us but not a castway node: leave it alone
            launched = task.get("createdAt")
            tier = (NodeTier.EDGE if env.get(TIER_ENV) == NodeTier.EDGE
                    else NodeTier.TRANSCODE)
            out.append(Instance(node_id=node_id, version=env.get(VERSION_ENV, ""),
                                launched_at=launched if isinstance(launched, datetime)
                                else utcnow(),
                                address=self._address(task), tier=tier))
        return out

    def start(self, count: int, version: str,
              tier: NodeTier = NodeTier.TRANSCODE) -> list[Instance]:
        started = []
        edge = tier == NodeTier.EDGE
        if edge and not self.config.edge_task_definition:
            raise BackendError("edge nodes wanted but the ECS configuration has no "
                               "'edge_task_definition'")
        template = (self.config.edge_task_definition if edge
                    else self.config.task_definition) or ""
        task_definition = template.replace("{version}", version)
        container = self.config.edge_container_name if edge else self.config.container_name
        groups = ((self.config.edge_security_groups or self.config.security_groups) if edge
                  else self.config.security_groups)
        for _ in range(count):
            node_id = f"ecs-{new_id()}"
            env = [{"name": NODE_ID_ENV, "value": node_id},
                   {"name": VERSION_ENV, "value": version},
                   *([{"name": TIER_ENV, "value": tier.value}] if edge else []),
                   *({"name": k, "value": v} for k, v in self.config.extra_env)]
            kwargs: dict[str, Any] = {
                "cluster": self.config.cluster, "taskDefinition": task_definition,
                "count": 1, "startedBy": STARTED_BY, "launchType": self.config.launch_type,
                "overrides": {"containerOverrides": [
                    {"name": container, "environment": env}]},
            }
            if self.config.subnets:
                kwargs["networkConfiguration"] = {"awsvpcConfiguration": {
                    "subnets": list(self.config.subnets),
                    "securityGroups": list(groups),
                    "assignPublicIp": "ENABLED" if self.config.assign_public_ip
                    else "DISABLED"}}
            response = self.ecs.run_task(**kwargs)
            if response.get("failures") or not response.get("tasks"):
                raise BackendError(f"RunTask failed: {response.get('failures')}")
            task = response["tasks"][0]
            logger.info("ecs task started", extra={"node": node_id, "version": version,
                                                   "task": task.get("taskArn"),
                                                   "tier": tier.value})
            started.append(Instance(node_id, version, utcnow(), self._address(task), tier))
        return started

    def stop(self, node_id: str) -> None:
        for task in self._tasks():
            if self._env(task).get(NODE_ID_ENV) == node_id:
                self.ecs.stop_task(cluster=self.config.cluster, task=task["taskArn"],
                                   reason=f"castway scheduler: stop {node_id}")
                logger.info("ecs task stopped", extra={"node": node_id,
                                                       "task": task["taskArn"]})

    # --- routing ---------------------------------------------------------------------
    def _target(self, node: Node) -> tuple[str, int] | None:
        host, _, port = node.address.rpartition(":")
        if not host or not port.isdigit() or host in ("0.0.0.0", "127.0.0.1", "localhost"):
            return None
        return host, int(port)

    def set_routable(self, node: Node, routable: bool) -> None:
        target = self._target(node)
        if target is None:
            logger.warning("node has no routable address", extra={"node": node.id,
                                                                   "address": node.address})
            return
        ip, port = target
        edge = node.tier == NodeTier.EDGE
        group = self.config.edge_target_group_arn if edge else self.config.target_group_arn
        if self.elb is not None and group:
            targets: Sequence[Any] = [{"Id": ip, "Port": port}]
            if routable:
                self.elb.register_targets(TargetGroupArn=group, Targets=targets)
            else:
                try:
                    self.elb.deregister_targets(TargetGroupArn=group, Targets=targets)
                except ClientError as exc:  # not registered (any more): nothing to do
                    if exc.response.get("Error", {}).get("Code") != "InvalidTarget":
                        raise
        name = (self.config.edge_route53_record_name if edge
                else self.config.route53_record_name)
        if self.route53 is not None and self.config.route53_zone_id and (name or not edge):
            self._dns(node.id, ip, routable, name or "")

    def _dns(self, node_id: str, ip: str, routable: bool, name: str) -> None:
        assert self.route53 is not None and self.config.route53_zone_id  # checked by caller
        record: Any = {"Name": name, "Type": "A", "SetIdentifier": node_id,
                       "MultiValueAnswer": True, "TTL": self.config.route53_ttl_s,
                       "ResourceRecords": [{"Value": ip}]}
        if not routable:
            existing = self.route53.list_resource_record_sets(
                HostedZoneId=self.config.route53_zone_id, StartRecordName=name,
                StartRecordType="A")["ResourceRecordSets"]
            if not any(r.get("SetIdentifier") == node_id for r in existing):
                return
        self.route53.change_resource_record_sets(
            HostedZoneId=self.config.route53_zone_id,
            ChangeBatch={"Changes": [{"Action": "UPSERT" if routable else "DELETE",
                                      "ResourceRecordSet": record}]})

    def close(self) -> None:
        self.ecs.close()
        if self.elb is not None:
            self.elb.close()
        if self.route53 is not None:
            self.route53.close()
