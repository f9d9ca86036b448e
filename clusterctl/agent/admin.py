"""Operator actions on a cluster's keys (used by the API, hence the CLI, and by tests).

They only write etcd; the agents act on the next loop iteration. Every function takes an
optional ``timeout`` for each store call and raises ``StoreError`` from the store unchanged.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from clusterctl.agent.keys import Keys
from clusterctl.agent.store.base import Store


class SpecMissing(KeyError):
    """The group has no (valid) ``groups/<g>/spec`` key: agents have not published it."""


def request_move(
    store: Store,
    keys: Keys,
    group: str,
    target: str,
    ttl: float = 30.0,
    timeout: float | None = None,
) -> int:
    """Ask for ``group`` to move to ``target``. The move key is bound to a lease of its own
    (returned) so that a move to a target that never takes over is forgotten after ``ttl``."""
    lease = store.grant_lease(ttl, timeout=timeout)
    store.put(keys.move(group), json.dumps({"target": target}), lease=lease, timeout=timeout)
    return lease


def cancel_move(store: Store, keys: Keys, group: str, timeout: float | None = None) -> bool:
    """Forget a pending move of ``group``. Returns whether there was one."""
    return store.delete(keys.move(group), timeout=timeout)


def reset_failcounts(store: Store, keys: Keys, group: str, timeout: float | None = None) -> int:
    """Delete ``group``'s fail counts (``pcs resource cleanup``). Returns how many."""
    return store.delete_prefix(keys.failcount_prefix(group), timeout=timeout)


def update_spec(
    store: Store,
    keys: Keys,
    group: str,
    change: Callable[[dict[str, Any]], None],
    timeout: float | None = None,
) -> dict[str, Any]:
    """Apply ``change`` (mutating a dict) to ``group``'s spec key with compare-and-put, retried
    on a concurrent edit. Returns the new spec. Raises ``SpecMissing`` if there is no valid
    spec, ``RuntimeError`` if it kept changing."""
    for _ in range(10):
        text = store.get(keys.spec(group), timeout=timeout)
        try:
            spec = json.loads(text) if text is not None else None
        except ValueError:
            spec = None
        if not isinstance(spec, dict):
            raise SpecMissing(f"no spec published for group {group!r}")
        change(spec)
        new = json.dumps(spec, sort_keys=True)
        if new == text or store.compare_and_put(keys.spec(group), text, new, timeout=timeout):
            return spec
    raise RuntimeError(f"spec of {group!r} kept changing; not updated")


# Fields of a group's spec key that operators change at run time (the CLI's ban, clear,
# cleanup); every other field is the configuration's and follows it.
RUNTIME_SPEC_FIELDS = ("bans",)


def publish_spec(
    store: Store, keys: Keys, spec: dict[str, Any], timeout: float | None = None
) -> bool:
    """Make ``spec`` (an agent's configured group, as ``group_to_dict`` gives it) the group's
    spec key, keeping the run-time fields already there: an edited groups file (preferred
    nodes, migration threshold) reaches placement when the agents restart with it, and a ban
    survives that. Returns whether the key changed; False also when other writers kept
    changing it (the caller's next start publishes again)."""
    group, text = str(spec["name"]), json.dumps(spec, sort_keys=True)
    if store.create_if_absent(keys.spec(group), text, timeout=timeout):
        return True
    before: dict[str, Any] = {}

    def change(current: dict[str, Any]) -> None:
        before.update(current)
        kept = {f: current[f] for f in RUNTIME_SPEC_FIELDS if f in current}
        current.clear()
        current.update(spec, **kept)

    try:
        return update_spec(store, keys, group, change, timeout) != before
    except SpecMissing:  # not JSON: nothing in it to keep
        store.put(keys.spec(group), text, timeout=timeout)
        return True
    except RuntimeError:  # an agent's loop must not die of a busy key
        return False


def _bans(spec: dict[str, Any]) -> list[str]:
    bans = spec.get("bans")
    return [str(b) for b in bans] if isinstance(bans, list) else []


def set_bans(
    store: Store, keys: Keys, group: str, bans: list[str], timeout: float | None = None
) -> None:
    """Replace ``group``'s bans in its spec key (which must exist: agents publish it)."""

    def change(spec: dict[str, Any]) -> None:
        spec["bans"] = list(bans)

    update_spec(store, keys, group, change, timeout)


def ban(store: Store, keys: Keys, group: str, node: str, timeout: float | None = None) -> list[str]:
    """Add ``node`` to ``group``'s bans (a holder that is banned releases the group).
    Returns the bans after the change."""

    def change(spec: dict[str, Any]) -> None:
        bans = _bans(spec)
        spec["bans"] = bans if node in bans else [*bans, node]

    return _bans(update_spec(store, keys, group, change, timeout))


def unban(
    store: Store, keys: Keys, group: str, node: str, timeout: float | None = None
) -> list[str]:
    """Remove ``node`` from ``group``'s bans. Returns the bans after the change."""

    def change(spec: dict[str, Any]) -> None:
        spec["bans"] = [b for b in _bans(spec) if b != node]

    return _bans(update_spec(store, keys, group, change, timeout))


def clear(store: Store, keys: Keys, group: str, timeout: float | None = None) -> str:
    """Remove ``group``'s bans and its pending move (``pcs resource clear``). Returns a
    sentence saying what was removed."""
    removed: list[str] = []

    def change(spec: dict[str, Any]) -> None:
        removed[:] = _bans(spec)
        spec["bans"] = []

    move = store.get(keys.move(group), timeout=timeout)
    update_spec(store, keys, group, change, timeout)
    had_move = cancel_move(store, keys, group, timeout)
    target = None
    if had_move and move is not None:
        try:
            target = json.loads(move).get("target")
        except (ValueError, AttributeError):
            target = None
    bans = f"bans ({', '.join(removed)})" if removed else "no bans"
    moved = (
        (f"the pending move to {target}" if target else "the pending move")
        if had_move
        else ("no pending move")
    )
    return f"cleared {bans} and {moved} of {group}"


def cleanup(store: Store, keys: Keys, group: str, timeout: float | None = None) -> str:
    """Clear ``group``'s fail counts and bans (like ``pcs resource cleanup`` + ``clear``).

    Bans live in the spec key, updated by compare-and-put so a concurrent edit is not lost.
    Returns a sentence saying what was cleared.
    """
    counts = reset_failcounts(store, keys, group, timeout)
    cleared_bans: list[str] = []

    def change(spec: dict[str, Any]) -> None:
        cleared_bans[:] = _bans(spec)
        spec["bans"] = []

    with contextlib.suppress(SpecMissing, RuntimeError):
        update_spec(store, keys, group, change, timeout)
    bans = ", ".join(cleared_bans) or "none"
    return f"cleared {counts} fail count(s) and bans ({bans}) of {group}"


def set_standby(
    store: Store, keys: Keys, node: str, standby: bool, timeout: float | None = None
) -> bool:
    """Put ``node`` in standby (persistent ``standby/<node>`` key) or take it out. Returns
    whether anything changed."""
    if standby:
        value = json.dumps({"standby": True})
        return store.create_if_absent(keys.standby(node), value, timeout=timeout)
    return store.delete(keys.standby(node), timeout=timeout)


def confirm_fenced(
    store: Store,
    keys: Keys,
    node: str,
    groups: list[str],
    at: float,
    timeout: float | None = None,
) -> list[str]:
    """An operator says ``node`` is off (Pacemaker's ``stonith_admin --confirm``): its name
    is cleared as the owner of each of ``groups`` it owns, so their next holder starts them
    without fencing it, and ``fence/<node>`` records the confirmation. Returns the groups
    released. The caller makes sure the node is not online: a wrong confirmation lets a
    group on shared storage run twice."""
    released = [g for g in groups if store.compare_and_delete(keys.owner(g), node, timeout)]
    record = {"by": "operator", "at": at, "took": 0.0, "result": "confirmed", "detail": ""}
    store.put(keys.fence(node), json.dumps(record), timeout=timeout)
    return released
