"""Where an edge relays a broadcast: a pure choice among the fleet's heartbeats."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from castway.model import Node, NodeState, NodeTier


def pick_transcoding_node(nodes: Sequence[Node], *, version: str,
                          exclude: Collection[str] = (),
                          leave_version: str | None = None,
                          broadcast_cost: float = 0.0) -> Node | None:
    """The transcoding node a broadcast goes to: active, with room (a free slot, and free
    transcode cores where it reports them), not in ``exclude`` (the node it leaves, or
    nodes that just failed it).

    Of those, in order: not on ``leave_version`` (a move off a draining node of a
    deploy's old version goes to the new one, not to an old node about to drain too); on
    ``version`` (the edge's own: same version first); open rather than closed (a node the
    scheduler holds out of rotation, to empty it, takes broadcasts only when no open one
    has room); with ``broadcast_cost`` cores free (what a broadcast is counted at: a
    node with less may refuse it); then the FULLEST -- the least free cores, then the
    fewest free slots. Packing is what lets the scheduler empty nodes: a fleet that
    spreads broadcasts keeps every node a little busy (docs/scheduler.md, "Two tiers").
    Ties go to the lowest id, so the choice is stable."""
    candidates = [n for n in nodes
                  if n.tier is NodeTier.TRANSCODE and n.state == NodeState.ACTIVE
                  and n.id not in exclude and n.free_slots > 0
                  and (n.cost_capacity <= 0 or n.cost_free > 0)]
    if not candidates:
        return None
    return min(candidates, key=lambda n: (
        leave_version is not None and n.image_version == leave_version,
        n.image_version != version, not n.routable,
        n.cost_capacity > 0 and n.cost_free < broadcast_cost,
        n.cost_free, n.free_slots, n.id))
