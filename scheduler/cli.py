"""``castway scheduler tick | run --interval S | simulate [--json] [--plot PATH]``."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from castway.health.wsgi import HealthApp, HealthServer
from castway.settings import Settings

if TYPE_CHECKING:
    from scheduler.policy import Policy
    from scheduler.simulate import Workload


def _parser() -> argparse.ArgumentParser:
    from scheduler.simulate import (
        EDGE_COST_PER_PUBLISHER,
        EDGE_TIER_EDGE_CAPACITY,
        EDGE_TIER_EDGE_VCPUS,
    )

    parser = argparse.ArgumentParser(prog="castway scheduler",
                                     description="the ingest fleet's scheduler")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, help_ in (("tick", "one tick: decide and act, then exit"),
                        ("run", "tick every --interval seconds until interrupted")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--desired-version", default=None,
                       help="image version to converge to (CASTWAY_DESIRED_VERSION)")
        p.add_argument("--ecs-config", type=Path, default=None,
                       help="JSON file of the ECS backend (cluster, task_definition, ...)")
        p.add_argument("--cloudwatch-namespace", default=None,
                       help="also publish CloudWatch custom metrics under this namespace")
        if name == "run":
            p.add_argument("--interval", type=float, default=None,
                           help="seconds between ticks (CASTWAY_SCHEDULER_INTERVAL_S)")
            p.add_argument("--http-port", type=int, default=None,
                           help="/healthz, /readyz, /metrics port (CASTWAY_HTTP_PORT)")
        else:
            p.add_argument("--json", action="store_true", help="print the tick as JSON")
    p = sub.add_parser("simulate", help="replay a day of broadcasts against the scheduler "
                       "and two baselines")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.add_argument("--plot", type=Path, default=None, help="write a PNG of nodes and "
                   "broadcasts over the day (needs matplotlib)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--reconnect-fraction", type=float, default=0.0,
                   help="share of publishers that honour E-RTMP v2 reconnect requests")
    p.add_argument("--no-deploy", action="store_true", help="no deploy at the peak")
    p.add_argument("--max-nodes", type=int, default=200)
    p.add_argument("--headroom-broadcast-cost", type=float, default=None,
                   help="cores a broadcast is counted at for the headroom (default: the "
                   "dearest source of the mix, 0.9)")
    p.add_argument("--headroom-fraction", type=float, default=None,
                   help="headroom as a fraction of the live cost (default: 0.2 on one "
                   "tier, none on the transcoding tier behind edges, as "
                   "CASTWAY_HEADROOM_FRACTION's default)")
    p.add_argument("--transcode-vcpus", type=float, default=None,
                   help="vCPUs of a transcoding node (default 2, 1.7 cores at the 85 %% "
                   "target, 8 broadcasts; with --edge 8 and 24 broadcasts, deploy/aws's "
                   "IngestCpu and NodeCapacity)")
    p.add_argument("--edge", action="store_true",
                   help="two tiers: RTMP edge nodes in front of the transcoding nodes, "
                   "with the one-tier figures beside them")
    p.add_argument("--edge-vcpus", type=float, default=EDGE_TIER_EDGE_VCPUS,
                   help=f"vCPUs of an edge node (--edge; {EDGE_TIER_EDGE_VCPUS}, "
                   "deploy/aws's EdgeCpu)")
    p.add_argument("--edge-capacity", type=int, default=EDGE_TIER_EDGE_CAPACITY,
                   help="publishers an edge node takes at most (--edge; "
                   f"{EDGE_TIER_EDGE_CAPACITY}, deploy/aws's EdgeCapacity)")
    p.add_argument("--edge-cost-per-publisher", type=float, default=EDGE_COST_PER_PUBLISHER,
                   help="cores one relayed publisher costs an edge node (--edge; "
                   f"{EDGE_COST_PER_PUBLISHER}: castway bench edge's 30 and 60 fps figures "
                   "over the day's mix)")
    p.add_argument("--placement", choices=("random", "fullest", "emptiest"),
                   default="fullest",
                   help="how the edge picks the transcoding node it relays to (--edge): "
                   "the fullest open one with room, as castway edge does (default); at "
                   "random among the open ones with room, as a load balancer would; or "
                   "the active one with the most free cores, closed or not")
    return parser


async def _tick_once(settings: Settings, args: argparse.Namespace) -> int:
    from castway.live import open_live_state
    from scheduler.factory import load_ecs_config, make_scheduler

    live = open_live_state(settings)
    scheduler = make_scheduler(settings, live, ecs=load_ecs_config(args.ecs_config),
                               cloudwatch_namespace=args.cloudwatch_namespace)
    try:
        result = await scheduler.tick(args.desired_version)
    finally:
        scheduler.backend.close()
        await scheduler.coordinator.close()
        await live.close()
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        if not result.ran:
            print("tick skipped: another tick holds the lock")
        for key, value in summary.items():
            print(f"{key}: {value}")
    return 1 if summary.get("errors") else 0


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    from castway.live import open_live_state
    from scheduler.factory import load_ecs_config, make_scheduler

    if args.desired_version:
        settings = settings.model_copy(update={"desired_version": args.desired_version})
    live = open_live_state(settings)
    scheduler = make_scheduler(settings, live, ecs=load_ecs_config(args.ecs_config),
                               cloudwatch_namespace=args.cloudwatch_namespace)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def live_ok() -> bool:  # called on the health server's thread
        return asyncio.run_coroutine_threadsafe(live.ping(), loop).result(timeout=2)

    registry = scheduler.metrics.registry if scheduler.metrics else CollectorRegistry()
    port = args.http_port if args.http_port is not None else settings.http_port
    health = HealthServer(HealthApp({"live": live_ok}, registry), settings.host, port).start()
    try:
        await scheduler.run(args.interval, stop)
    finally:
        health.close()
        scheduler.backend.close()
        await scheduler.coordinator.close()
        await live.close()
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from scheduler.policy import EDGE_TIER_HEADROOM_FRACTION
    from scheduler.simulate import (
        EDGE_TIER_NODE_CAPACITY,
        EDGE_TIER_TRANSCODE_VCPUS,
        NODE_VCPUS,
        Workload,
        compare,
        default_policy,
        plot,
        report,
        sized_policy,
    )

    workload = Workload(seed=args.seed, reconnect_fraction=args.reconnect_fraction,
                        deploy_at_h=None if args.no_deploy else Workload().deploy_at_h)
    vcpus = args.transcode_vcpus or (EDGE_TIER_TRANSCODE_VCPUS if args.edge else NODE_VCPUS)
    policy = sized_policy(default_policy(args.max_nodes), vcpus)
    if args.edge and args.transcode_vcpus is None:  # deploy/aws's transcoding task
        policy = replace(policy, node_capacity=EDGE_TIER_NODE_CAPACITY)
    if args.headroom_broadcast_cost is not None:
        policy = replace(policy, broadcast_cost=args.headroom_broadcast_cost)
    if args.headroom_fraction is not None:
        policy = replace(policy, headroom_fraction=args.headroom_fraction)
    if args.edge:
        behind_edges = (policy if args.headroom_fraction is not None
                        else replace(policy, headroom_fraction=EDGE_TIER_HEADROOM_FRACTION))
        return _simulate_tiers(args, workload, behind_edges, policy)
    results = compare(workload, policy)
    figures = report(results)
    if args.plot is not None:
        plot(results, args.plot)
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"{'strategy':<16}{'container-h':>12}{'ideal':>8}{'ratio':>7}"
          f"{'interrupted':>13}{'refused':>9}{'moved':>7}{'peak':>6}")
    for name, f in results.items():
        row = f.as_json()
        print(f"{name:<16}{row['container_hours']:>12}{row['ideal_container_hours']:>8}"
              f"{row['ratio']:>7}{row['interrupted']:>13}{row['refused']:>9}"
              f"{row['moved']:>7}{row['peak_nodes']:>6}")
    print(f"bounds: headroom {figures['ideal_with_headroom_container_hours']}, no migration "
          f"{figures['no_migration_bound_container_hours']}; clairvoyant packing reference "
          f"{figures['clairvoyant_packing_container_hours']} container-h")
    print(f"{figures['broadcasts']} broadcasts in the day; deploy at "
          f"{workload.deploy_at_h} h; reconnect-capable publishers: "
          f"{workload.reconnect_fraction:.0%}")
    if args.plot is not None:
        print(f"plot: {args.plot}")
    return 0


def _simulate_tiers(args: argparse.Namespace, workload: Workload, policy: Policy,
                    one_tier_policy: Policy) -> int:
    from scheduler.simulate import EdgeModel, compare_tiers

    edge = EdgeModel(cost_per_publisher=args.edge_cost_per_publisher,
                     capacity=args.edge_capacity, vcpus=args.edge_vcpus)
    figures = compare_tiers(workload, policy, edge, placement=args.placement,
                            one_tier_policy=one_tier_policy).as_json()
    if args.json:
        print(json.dumps(figures))
        return 0
    one = figures["one_tier"]
    print(f"{'':<16}{'vCPU-h':>10}{'ideal':>9}{'ratio':>7}{'interrupted':>13}"
          f"{'refused':>9}{'moved':>7}")
    print(f"{'two tiers':<16}{figures['total_vcpu_hours']:>10}"
          f"{figures['ideal_vcpu_hours']:>9}{figures['ratio']:>7}"
          f"{figures['interrupted']:>13}{figures['refused']:>9}{figures['moved']:>7}")
    for name, tier in figures["tiers"].items():
        print(f"{'  ' + name:<16}{tier['vcpu_hours']:>10}{'':>9}{'':>7}"
              f"{tier['interrupted']:>13}{'':>9}{tier['moved']:>7}"
              f"   peak {tier['peak_nodes']} x {tier['vcpus_per_node']} vCPU")
    print(f"{'one tier':<16}{one['vcpu_hours']:>10}{one['ideal_vcpu_hours']:>9}"
          f"{one['ratio']:>7}{one['interrupted']:>13}{one['refused']:>9}{one['moved']:>7}")
    print(f"{figures['broadcasts']} broadcasts in the day; {edge.publishers_per_node} "
          f"publishers per edge node; reconnect-capable encoders: "
          f"{workload.reconnect_fraction:.0%}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "simulate":
        return _simulate(args)
    from scheduler.backends.base import BackendError

    settings = Settings()
    try:
        if args.cmd == "tick":
            return asyncio.run(_tick_once(settings, args))
        return asyncio.run(_run(settings, args))
    except BackendError as exc:
        print(f"castway scheduler: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
