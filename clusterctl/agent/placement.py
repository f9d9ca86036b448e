"""Placement rules as pure functions of a ``ClusterView``: who may acquire, who must let go.

Each function returns ``None`` when nothing stands in the way, or a short reason that ends up
in the loop's sentence.
"""

from __future__ import annotations

import hashlib

from clusterctl.agent.view import ClusterView, GroupView


def node_block(node: str, view: ClusterView, group: GroupView) -> str | None:
    """Why ``node`` may not run ``group`` at all (neither acquire nor keep it), or None."""
    if node in group.spec.bans:
        return f"{node} is banned from {group.name}"
    member = view.members.get(node)
    if member is not None and member.standby:
        return f"{node} is in standby"
    failures = group.failcounts.get(node, 0)
    if failures >= group.spec.migration_threshold:
        return f"{node} reached {group.name}'s migration threshold ({failures} failures)"
    return None


def eligible(node: str, view: ClusterView, group: GroupView) -> bool:
    return node in view.members and node_block(node, view, group) is None


def acquire_block(node: str, view: ClusterView, group: GroupView) -> str | None:
    """Why ``node`` must not try to acquire the (free) ``group`` now, or None.

    Beyond ``node_block``: while a move is pending only its target may acquire; and while any
    preferred node is an eligible member, the others leave the group to it.
    """
    block = node_block(node, view, group)
    if block:
        return block
    if group.move is not None and group.move.target != node:
        return f"{group.name} is moving to {group.move.target}"
    preferred = [p for p in group.spec.preferred if eligible(p, view, group)]
    if preferred and node not in preferred:
        return f"{group.name} prefers {', '.join(preferred)}"
    return None


# The last order computed, for the view it was computed from: the agents of one process that
# read one watched copy share its parsed view (view.parse_view), and 500 of them woken by a
# freed group would otherwise each hash and sort 500 members.
_last_order: tuple[ClusterView, str, list[str]] | None = None


def taking_order(view: ClusterView, group: GroupView) -> list[str]:
    """The members that may take the free ``group`` (those it does not block: a move's
    target, the preferred nodes, the eligible), in the order they try: the first three at
    once, the next three half a second later, and so on (``ha.FIRST_TAKERS``).

    Why: hundreds of nodes racing for one freed group put hundreds of lease grants and
    transactions on etcd in the same instant, and all but one fail. The order is rendezvous
    hashing of (group, node): every node computes the same order from the same members
    without asking anyone, and different groups get different first takers."""
    global _last_order
    last = _last_order
    if last is not None and last[0] is view and last[1] == group.name:
        return last[2]
    order = sorted(
        (node for node in view.members if acquire_block(node, view, group) is None),
        key=lambda node: hashlib.sha256(f"{group.name}/{node}".encode()).digest(),
    )
    _last_order = (view, group.name, order)
    return order


def release_reason(node: str, view: ClusterView, group: GroupView) -> str | None:
    """Why the holder ``node`` must stop and release ``group`` now, or None.

    There is no preemption: a holder never lets go because a "better" node appeared
    (stickiness). It lets go when it is blocked itself, or for a planned move once the target
    is a live eligible member and — if the group has prestart_safe resources, or one that
    migrates live — has pre-started them (make-before-break) or prepared the incoming side.
    """
    block = node_block(node, view, group)
    if block:
        return block
    move = group.move
    if move is None or move.target == node:
        return None
    if not eligible(move.target, view, group):
        return None  # refuse to hand over to a node that cannot take it; see move_wait
    if needs_prestart(group) and group.prestarted_by != move.target:
        return None
    return f"moving {group.name} to {move.target}"


def needs_prestart(group: GroupView) -> bool:
    """Whether a planned move waits for the target to pre-start something: prestart_safe
    resources (make-before-break), or a migratable one (its incoming side, for a live move)."""
    return any(
        (r.prestart_safe and not r.is_exclusive) or r.is_migratable for r in group.spec.resources
    )


def move_wait(node: str, view: ClusterView, group: GroupView) -> str | None:
    """For a holder not releasing: what the pending move (if any) is waiting for, or None."""
    move = group.move
    if move is None or move.target == node:
        return None
    if not eligible(move.target, view, group):
        return f"move of {group.name} to {move.target} on hold: it is not an eligible member"
    return f"waiting for {move.target} to pre-start {group.name} before moving it"
