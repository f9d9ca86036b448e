"""Keeps etcd's Raft leadership off the node that holds a group.

Why: when a node that holds a group is also etcd's leader and crashes, the group's outage is
an election (etcd's election timeout) plus a whole lease TTL, because a member that becomes
leader re-arms every lease for its full TTL plus the election timeout (etcd's
``lessor.Promote``) — the crashed holder's lease with them. With the leader elsewhere, the
holder's crash costs the lease TTL alone. So the holder's agent, when its own member leads,
hands leadership to another member (``/v3/maintenance/transfer-leadership``, a planned
transfer: no election timeout, a few heartbeats).

Runs in a thread of its own, with a store client of its own: a transfer waits for the target
to catch up and must never delay the loop's renewals.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from clusterctl.agent.store.base import StoreError
from clusterctl.agent.store.etcd import EtcdStore

log = logging.getLogger(__name__)

CHECK_INTERVAL = 2.0  # seconds between looks at who leads
TRANSFER_TIMEOUT = 3.0
# seconds the holder's member must have led before it hands leadership away: a leader that
# came with a failover moves soon, and nothing moves back and forth while etcd settles
LEAD_GRACE = 10.0


class LeaderMover:
    def __init__(
        self,
        store: EtcdStore,
        endpoint: str,
        holding: Callable[[], list[str]],
        timeout: float = 1.0,
        grace: float = LEAD_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``endpoint``: this node's own member; ``holding``: the groups held here now."""
        self.store = store
        self.endpoint = endpoint
        self.holding = holding
        self.timeout = timeout
        self.grace = grace
        self.clock = clock
        self._leading_since: float | None = None  # holding and leading since

    def check(self) -> str | None:
        """One look; returns a sentence when it moved leadership, None otherwise. Raises
        ``StoreError`` when the member does not answer as expected."""
        held = self.holding()
        if not held:
            self._leading_since = None
            return None
        status = self.store.member_call(
            self.endpoint, "/v3/maintenance/status", {}, timeout=self.timeout
        )
        me = str(status.get("header", {}).get("member_id", ""))
        if not me or str(status.get("leader", "")) != me:
            self._leading_since = None
            return None
        now = self.clock()
        if self._leading_since is None:
            self._leading_since = now
        if now - self._leading_since < self.grace:
            return None
        members = self.store.member_call(
            self.endpoint, "/v3/cluster/member/list", {}, timeout=self.timeout
        ).get("members", [])
        targets = sorted(
            (m for m in members if str(m.get("ID")) != me and m.get("clientURLs")),
            key=lambda m: str(m.get("name", "")),
        )
        if not targets:
            return None
        target = targets[0]
        self._leading_since = None
        self.store.member_call(
            self.endpoint,
            "/v3/maintenance/transfer-leadership",
            {"targetID": str(target["ID"])},
            timeout=TRANSFER_TIMEOUT,
        )
        return (
            f"moved etcd leadership to {target.get('name', target['ID'])}: this node holds "
            f"{', '.join(held)}"
        )

    def run(self, stop: threading.Event, interval: float = CHECK_INTERVAL) -> None:
        while not stop.wait(interval):
            try:
                sentence = self.check()
            except StoreError as exc:
                log.debug("etcd leadership not checked: %s", exc)
                continue
            if sentence:
                log.info("%s", sentence)
