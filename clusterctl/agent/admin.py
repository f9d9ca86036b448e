"""Operator actions on a cluster's keys (used by the CLI through the API, and by tests).

They only write etcd; the agents act on the next loop iteration.
"""

from __future__ import annotations

import json

from clusterctl.agent.keys import Keys
from clusterctl.agent.store.base import Store


def request_move(store: Store, keys: Keys, group: str, target: str, ttl: float = 30.0) -> int:
    """Ask for ``group`` to move to ``target``. The move key is bound to a lease of its own
    (returned) so that a move to a target that never takes over is forgotten after ``ttl``."""
    lease = store.grant_lease(ttl)
    store.put(keys.move(group), json.dumps({"target": target}), lease=lease)
    return lease


def cancel_move(store: Store, keys: Keys, group: str) -> None:
    store.delete(keys.move(group))


def cleanup(store: Store, keys: Keys, group: str) -> str:
    """Clear ``group``'s fail counts and bans (like ``pcs resource cleanup`` + ``clear``).

    Bans live in the spec key, updated by compare-and-put so a concurrent edit is not lost.
    Returns a sentence saying what was cleared.
    """
    counts = store.delete_prefix(keys.failcount_prefix(group))
    cleared_bans: list[str] = []
    for _ in range(10):  # retry on a concurrent spec change
        text = store.get(keys.spec(group))
        if text is None:
            break
        try:
            spec = json.loads(text)
        except ValueError:
            break
        if not isinstance(spec, dict) or not spec.get("bans"):
            break
        cleared_bans = list(spec["bans"])
        spec["bans"] = []
        if store.compare_and_put(keys.spec(group), text, json.dumps(spec, sort_keys=True)):
            break
    bans = ", ".join(cleared_bans) or "none"
    return f"cleared {counts} fail count(s) and bans ({bans}) of {group}"


def set_bans(store: Store, keys: Keys, group: str, bans: list[str]) -> None:
    """Replace ``group``'s bans in its spec key (which must exist: agents publish it)."""
    for _ in range(10):
        text = store.get(keys.spec(group))
        if text is None:
            raise KeyError(f"no spec published for group {group!r}")
        spec = json.loads(text)
        spec["bans"] = list(bans)
        if store.compare_and_put(keys.spec(group), text, json.dumps(spec, sort_keys=True)):
            return
    raise RuntimeError(f"spec of {group!r} kept changing; bans not set")
