"""Scheduler metrics: fleet by state, free slots, actions. Prometheus always (on the
registry it is given), CloudWatch custom metrics when a namespace is set."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from castway.model import NodeState
from scheduler.decide import Decision

logger = logging.getLogger(__name__)


class SchedulerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, *,
                 cloudwatch_namespace: str | None = None, region: str = "us-east-1",
                 client_factory: Callable[..., Any] | None = None,
                 endpoint_url: str | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.nodes = Gauge("castway_scheduler_nodes", "Ingest nodes by state", ["state"],
                           registry=self.registry)
        self.free = Gauge("castway_scheduler_free_cores", "Free transcode capacity "
                          "(cores) on accepting nodes of the desired version (open, "
                          "closed, starting)", registry=self.registry)
        self.headroom = Gauge("castway_scheduler_headroom_cores", "Free transcode capacity "
                              "(cores) the policy wants", registry=self.registry)
        self.open_free = Gauge("castway_scheduler_open_free_cores", "Free transcode "
                               "capacity (cores) on the nodes in the load balancer",
                               registry=self.registry)
        self.open_headroom = Gauge("castway_scheduler_open_headroom_cores", "Free cores the "
                                   "policy wants in the load balancer",
                                   registry=self.registry)
        self.publish_rate = Gauge("castway_scheduler_publish_rate_per_min", "Measured "
                                  "publishes per minute (sizes the headroom)",
                                  registry=self.registry)
        self.live = Gauge("castway_scheduler_live_broadcasts", "Live broadcasts on the fleet",
                          registry=self.registry)
        self.actions = Counter("castway_scheduler_actions", "Actions taken", ["action"],
                               registry=self.registry)
        self.nodes_wanted = Counter("castway_scheduler_nodes_wanted", "Nodes the scheduler "
                                    "wanted started that the backend cannot start (static "
                                    "fleet)", registry=self.registry)
        self.ticks = Counter("castway_scheduler_ticks", "Ticks run (skipped: lock held)",
                             ["outcome"], registry=self.registry)
        self.namespace = cloudwatch_namespace
        self._cloudwatch: Any = None
        if cloudwatch_namespace:
            import boto3

            factory = client_factory or boto3.client
            kwargs: dict[str, Any] = {"region_name": region}
            if endpoint_url:
                kwargs["endpoint_url"] = endpoint_url
            self._cloudwatch = factory("cloudwatch", **kwargs)

    def record(self, decision: Decision) -> None:
        figures = decision.figures
        counts = dict(figures.by_state)
        for state in NodeState:
            self.nodes.labels(state=state.value).set(counts.get(state.value, 0))
        self.free.set(figures.free)
        self.headroom.set(figures.headroom)
        self.open_free.set(figures.open_free)
        self.open_headroom.set(figures.open_headroom)
        if figures.publish_rate_per_min is not None:
            self.publish_rate.set(figures.publish_rate_per_min)
        self.live.set(figures.live_broadcasts)
        kinds: dict[str, int] = {}
        for action in decision.actions:
            kind = type(action).__name__
            kinds[kind] = kinds.get(kind, 0) + 1
            self.actions.labels(action=kind).inc()
        if self._cloudwatch is not None:
            self._put_cloudwatch(counts, figures.free, figures.headroom,
                                 figures.live_broadcasts, kinds)

    def _put_cloudwatch(self, counts: dict[str, int], free: float, headroom: float, live: int,
                        kinds: dict[str, int]) -> None:
        data: list[dict[str, Any]] = [
            {"MetricName": "Nodes", "Dimensions": [{"Name": "State", "Value": s.value}],
             "Value": counts.get(s.value, 0), "Unit": "Count"} for s in NodeState]
        data += [{"MetricName": "FreeCores", "Value": free, "Unit": "None"},
                 {"MetricName": "HeadroomCores", "Value": headroom, "Unit": "None"},
                 {"MetricName": "LiveBroadcasts", "Value": live, "Unit": "Count"}]
        data += [{"MetricName": "Actions", "Dimensions": [{"Name": "Action", "Value": k}],
                  "Value": v, "Unit": "Count"} for k, v in kinds.items()]
        try:
            self._cloudwatch.put_metric_data(Namespace=self.namespace, MetricData=data)
        except Exception:  # metrics never stop a tick
            logger.exception("CloudWatch put_metric_data failed")
