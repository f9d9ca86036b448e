"""The member lease: registration in ``members/<node>`` and the fencing deadline.

The deadline is the heart of the safety rule. etcd restarts a lease's countdown when it
processes a keepalive, which is never earlier than when the agent sent it; so measuring from
the send time, the lease cannot expire before ``sent + lease_ttl``. The agent holds resources
only until ``sent + lease_ttl - fence_margin``, which leaves ``fence_margin`` to stop them.

A lease is *fast* (``lease_ttl``; everything a node holds is bound to it and the deadline is
measured from it) or *idle* (``idle_ttl``; only the member key: no deadline, renewed rarely
and without the quorum check). config.py says why; the agent switches (agent/ha.py).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable

from clusterctl.agent.clock import Clock
from clusterctl.agent.config import AgentConfig
from clusterctl.agent.keys import Keys
from clusterctl.agent.store.base import Store


class MemberLease:
    """One agent's lease. Methods raise ``StoreError`` subclasses from the store unchanged."""

    def __init__(
        self,
        store: Store,
        keys: Keys,
        config: AgentConfig,
        clock: Clock,
        on_renew: Callable[[float], None] | None = None,
    ) -> None:
        """``on_renew`` is called with the latency (seconds) of each successful renewal."""
        self.store = store
        self.on_renew = on_renew
        self.keys = keys
        self.config = config
        self.clock = clock
        self.lease_id: int | None = None
        self.last_renewal: float | None = None  # send time of the last successful grant/renew
        self.last_attempt_failed = False
        self.fast = True  # the kind of the current lease (meaningless without one)
        # seconds the last few successful grants and renewals took
        self.latencies: deque[float] = deque(maxlen=3)
        self._member_written: str | None = None

    @property
    def deadline(self) -> float | None:
        """Monotonic time until which this node may hold resources; None without a fast
        lease (nothing may be held under an idle one)."""
        if self.lease_id is None or self.last_renewal is None or not self.fast:
            return None
        return self.last_renewal + self.config.lease_ttl - self.config.fence_margin

    def valid(self, now: float) -> bool:
        deadline = self.deadline
        return deadline is not None and now < deadline

    def time_left(self, now: float) -> float:
        deadline = self.deadline
        return 0.0 if deadline is None else deadline - now

    def next_renewal(self, holding: bool) -> float | None:
        """Monotonic time the next renewal is due (None: due now, no renewal yet); a node
        that holds a group renews at ``holding_renew_interval`` (config.py says why)."""
        if self.last_renewal is None:
            return None
        if not self.fast:
            interval = self.config.idle_renew_interval
        elif holding:
            interval = self.config.holding_renew_interval
        else:
            interval = self.config.renew_interval
        return self.last_renewal + interval

    def renew_due(self, now: float, holding: bool) -> bool:
        due = self.next_renewal(holding)
        return due is None or now >= due

    @property
    def store_pace(self) -> float:
        """What a call to the store takes now: the fastest of the last few renewals (one
        that waited for this process's CPU, not for the store, does not count)."""
        return min(self.latencies, default=0.0)

    def forget(self) -> None:
        """Drop the lease locally (it expired or we gave up on it); the next step re-grants."""
        self.lease_id = None
        self.last_renewal = None
        self._member_written = None

    def member_value(self, standby: bool) -> str:
        from clusterctl import __version__

        return json.dumps(
            {
                "address": self.config.address,
                "health": "ok",
                "version": __version__,
                "standby": standby,
            },
            sort_keys=True,
        )

    def grant(self, timeout: float | None = None, fast: bool = True) -> int | None:
        """Get a new lease, fast or idle (member key written by ``register``), waiting at
        most ``timeout`` (default ``request_timeout``). Returns the lease it replaces (the
        caller revokes it once the member key is bound to the new one), if any."""
        sent = self.clock.now()
        lease_id = self.store.grant_lease(
            self.config.lease_ttl if fast else self.config.idle_ttl,
            timeout=self.config.request_timeout if timeout is None else timeout,
        )
        replaced, self.lease_id = self.lease_id, lease_id
        self.latencies.append(self.clock.now() - sent)
        self.fast = fast
        self.last_renewal = sent
        self.last_attempt_failed = False
        self._member_written = None
        return replaced

    def register(self, standby: bool, timeout: float) -> bool:
        """Write ``members/<node>`` bound to the lease if its value changed. Returns whether
        it wrote."""
        value = self.member_value(standby)
        if value == self._member_written or self.lease_id is None:
            return False
        self.store.put(self.keys.member(self.config.node), value, self.lease_id, timeout=timeout)
        self._member_written = value
        return True

    def renew(self) -> None:
        """Keep the lease alive, waiting at most ``renew_timeout``, and never past the
        deadline while it lies ahead. On success the deadline moves to ``send time + ttl -
        fence_margin``.

        Past the deadline the node holds nothing (the HA step fences before any I/O), so the
        renewal gets its whole ``renew_timeout``: capped at a few milliseconds there, a node
        whose renewals had stalled (an etcd election) could never catch up again, since the
        first renewal after a leader change must find the new leader first, and it kept
        failing until etcd expired its lease."""
        assert self.lease_id is not None
        sent = self.clock.now()
        left = self.time_left(sent)
        if not self.fast:  # nothing held, no deadline: a slow answer still counts
            timeout = max(self.config.renew_timeout, self.config.request_timeout)
        elif left <= 0:
            timeout = self.config.renew_timeout
        else:
            timeout = min(self.config.renew_timeout, max(0.01, left))
        try:
            self.store.keepalive(self.lease_id, timeout=timeout, confirm=self.fast)
        except Exception:
            self.last_attempt_failed = True
            raise
        self.last_renewal = sent
        self.last_attempt_failed = False
        latency = self.clock.now() - sent
        self.latencies.append(latency)
        if self.on_renew is not None:
            self.on_renew(latency)

    def revoke(self) -> None:
        if self.lease_id is not None:
            self.store.revoke(self.lease_id, timeout=self.config.request_timeout)
        self.forget()
