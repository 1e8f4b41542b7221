"""Two tiers in one decision (:func:`decide_tiers`): RTMP edge nodes in front of the
transcoding nodes (issue 15). Pure, synchronous, no I/O.

Each tier is decided on its own by :func:`scheduler.decide.decide` with its own policy,
on its own nodes only, so one tier's load never starts, closes, drains nor stops a node
of the other. Their actions and memories are merged into one :class:`Decision`.

- **edge** (``castway edge``): ends the publishers' RTMP connections and relays each
  broadcast to a transcoding node. Counted in publishers (a heartbeat's ``capacity`` and
  ``active_broadcasts``; no transcode cost). A plain encoder cannot reconnect, so an
  edge node's publishers are pinned: it is never drained while it holds one (its
  ``reconnectable`` is taken as 0 whatever it reports) and drains by waiting.
- **transcode** (``castway ingest``): as one-tier fleets are decided today. Behind edges
  every relay honours reconnect requests (a transcoding node heartbeats
  ``reconnectable == active_broadcasts``), so scale-in and deploys move its broadcasts
  (make-before-break) instead of waiting for them to end.

Without edge nodes and without an edge policy the result is exactly
:func:`scheduler.decide.decide`'s (one-tier fleets, ``castway serve``).

Design: docs/scheduler.md, "Two tiers: edge and transcode".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from castway.model import Node, NodeTier
from scheduler.decide import Decision, FleetFigures, FleetMemory, StartNodes, decide
from scheduler.policy import Policy

#: The order tiers are decided and their actions listed in: the edge first (publishers
#: reach it first), then the transcoding nodes.
TIER_ORDER = (NodeTier.EDGE, NodeTier.TRANSCODE)


def _tier_memory(memory: FleetMemory, tier: NodeTier, ids: set[str]) -> FleetMemory:
    """One tier's view of the shared memory: its own nodes' records and its cooldowns."""
    out = replace(memory,
                  drains=tuple(d for d in memory.drains if d.node_id in ids),
                  resumes=tuple(r for r in memory.resumes if r.node_id in ids),
                  closed=tuple(n for n in memory.closed if n in ids),
                  opened=tuple(o for o in memory.opened if o.node_id in ids),
                  edge_last_scale_out_at=None, edge_last_scale_in_at=None)
    if tier == NodeTier.EDGE:
        out = replace(out, last_scale_out_at=memory.edge_last_scale_out_at,
                      last_scale_in_at=memory.edge_last_scale_in_at)
    return out


def _merge_memory(parts: Mapping[NodeTier, FleetMemory], base: FleetMemory) -> FleetMemory:
    transcode = parts.get(NodeTier.TRANSCODE)
    edge = parts.get(NodeTier.EDGE)
    ordered = list(parts.values())
    return FleetMemory(
        last_scale_out_at=transcode.last_scale_out_at if transcode else base.last_scale_out_at,
        last_scale_in_at=transcode.last_scale_in_at if transcode else base.last_scale_in_at,
        edge_last_scale_out_at=edge.last_scale_out_at if edge
        else base.edge_last_scale_out_at,
        edge_last_scale_in_at=edge.last_scale_in_at if edge else base.edge_last_scale_in_at,
        drains=tuple(sorted((d for m in ordered for d in m.drains), key=lambda d: d.node_id)),
        resumes=tuple(sorted((r for m in ordered for r in m.resumes),
                             key=lambda r: r.node_id)),
        closed=tuple(sorted(n for m in ordered for n in m.closed)),
        opened=tuple(sorted((o for m in ordered for o in m.opened), key=lambda o: o.node_id)))


def _merge_figures(parts: Mapping[NodeTier, FleetFigures]) -> FleetFigures:
    by_state: dict[str, int] = {}
    for figures in parts.values():
        for state, count in figures.by_state:
            by_state[state] = by_state.get(state, 0) + count
    # the transcoding tier's figures are the fleet's (cores; live broadcasts counted
    # once: every broadcast on an edge is also on a transcoding node)
    main = parts.get(NodeTier.TRANSCODE) or next(iter(parts.values()))
    return replace(main, by_state=tuple(sorted(by_state.items())),
                   tiers=tuple((tier.value, figures) for tier, figures in parts.items()))


def decide_tiers(nodes: Sequence[Node], desired_version: str | Mapping[NodeTier, str],
                 policies: Mapping[NodeTier, Policy], now: datetime,
                 memory: FleetMemory | None = None,
                 oldest_broadcast: Mapping[str, datetime] | None = None,
                 publish_rate_per_s: float | None = None) -> Decision:
    """Decide each tier with its own policy on its own nodes, and merge the results.

    ``desired_version``: one version for both tiers, or one per tier (the edge is
    rarely deployed). ``policies``: a tier without a policy is not scheduled (its nodes
    are neither counted nor acted on); a tier with a policy and no node is started.
    ``publish_rate_per_s`` is the same for both: every broadcast has a publisher on an
    edge node and its transcoding on a transcoding node.
    """
    memory = memory or FleetMemory()
    if NodeTier.EDGE not in policies and not any(n.tier == NodeTier.EDGE for n in nodes):
        return decide(nodes, desired_version if isinstance(desired_version, str)
                      else desired_version[NodeTier.TRANSCODE],
                      policies[NodeTier.TRANSCODE], now, memory, oldest_broadcast,
                      publish_rate_per_s)
    decisions: dict[NodeTier, Decision] = {}
    for tier in TIER_ORDER:
        policy = policies.get(tier)
        if policy is None:
            continue
        own = [n for n in nodes if n.tier == tier]
        if tier == NodeTier.EDGE:
            # plain encoders: whatever an edge reports, its publishers cannot move
            own = [replace(n, reconnectable=0) if n.reconnectable else n for n in own]
        version = (desired_version if isinstance(desired_version, str)
                   else desired_version[tier])
        decision = decide(own, version, policy, now,
                          _tier_memory(memory, tier, {n.id for n in own}),
                          oldest_broadcast, publish_rate_per_s)
        actions = tuple(replace(a, tier=tier) if isinstance(a, StartNodes) else a
                        for a in decision.actions)
        decisions[tier] = replace(decision, actions=actions)
    return Decision(
        actions=tuple(a for d in decisions.values() for a in d.actions),
        memory=_merge_memory({t: d.memory for t, d in decisions.items()}, memory),
        figures=_merge_figures({t: d.figures for t, d in decisions.items()}))
