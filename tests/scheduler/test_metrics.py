"""Scheduler metrics: Prometheus on the given registry, CloudWatch through moto."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import boto3
import pytest
from moto import mock_aws

from castway.model import Node, NodeState
from scheduler.decide import decide
from scheduler.metrics import SchedulerMetrics
from scheduler.policy import Policy

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
FLEET = [Node(id="a", image_version="v1", address="", state=NodeState.ACTIVE,
              active_broadcasts=8, heartbeat_at=NOW),
         Node(id="b", image_version="v0", address="", state=NodeState.ACTIVE,
              active_broadcasts=3, heartbeat_at=NOW)]


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield


def test_prometheus_figures_follow_the_decision() -> None:
    metrics = SchedulerMetrics()
    decision = decide(FLEET, "v1", Policy(), NOW)
    metrics.record(decision)
    sample = metrics.registry.get_sample_value
    assert sample("castway_scheduler_nodes", {"state": "active"}) == 2.0
    assert sample("castway_scheduler_nodes", {"state": "draining"}) == 0.0
    assert sample("castway_scheduler_live_broadcasts") == 11.0
    assert sample("castway_scheduler_headroom_cores") == 3.0
    assert sample("castway_scheduler_free_cores") == 0.0
    assert sample("castway_scheduler_actions_total", {"action": "StartNodes"}) == 1.0


def test_cloudwatch_custom_metrics(aws: None) -> None:
    metrics = SchedulerMetrics(cloudwatch_namespace="castway/scheduler")
    metrics.record(decide(FLEET, "v1", Policy(), NOW))
    listed = boto3.client("cloudwatch", region_name="us-east-1").list_metrics(
        Namespace="castway/scheduler")["Metrics"]
    names = {m["MetricName"] for m in listed}
    assert {"Nodes", "FreeCores", "HeadroomCores", "LiveBroadcasts", "Actions"} <= names
    states = {d["Value"] for m in listed if m["MetricName"] == "Nodes"
              for d in m.get("Dimensions", [])}
    assert {"active", "draining", "starting", "stopped", "lost"} <= states
