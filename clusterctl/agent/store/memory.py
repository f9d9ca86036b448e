"""An in-memory ``Store`` for unit tests: several clients (agents) share one backend.

Leases expire exactly as in etcd (every key bound to an expired lease vanishes), driven by an
injectable clock, so a test can move time by hand. Each client can be cut off to simulate a
partition, either failing fast ("connection refused") or hanging until its timeout first.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from clusterctl.agent.clock import Clock, FakeClock
from clusterctl.agent.store.base import Compare, LeaseExpired, Store, StoreUnavailable, Write

__all__ = ["FakeClock", "MemoryBackend", "MemoryStore"]


@dataclass
class _Lease:
    ttl: float
    expires_at: float


class MemoryBackend:
    """The shared state: keys, leases and which clients are cut off.

    ``expiry_granularity`` > 0 mimics etcd's lessor, which only checks for expired leases
    every ~500 ms: a lease then vanishes at the first multiple of the granularity at or
    after its expiry. The default 0 expires leases at the exact instant.
    """

    def __init__(self, clock: Clock, expiry_granularity: float = 0.0) -> None:
        self.clock = clock
        self.expiry_granularity = expiry_granularity
        self._lock = threading.RLock()
        self._kv: dict[str, tuple[str, int | None]] = {}
        self._leases: dict[int, _Lease] = {}
        self._ids = itertools.count(0x1000)
        self._down: dict[str, bool] = {}  # client -> hangs (True) or fails fast (False)
        self.members_behind: set[str] = set()  # endpoints of members not (yet) rejoined

    # -- fault injection -------------------------------------------------------------------

    def partition(self, client: str, hang: bool = False) -> None:
        """Cut ``client`` off: its calls raise ``StoreUnavailable``.

        With ``hang=True`` each call first lets its timeout elapse on the clock (which must
        then be a ``FakeClock``), like a request to an unreachable etcd.
        """
        with self._lock:
            self._down[client] = hang

    def heal(self, client: str) -> None:
        with self._lock:
            self._down.pop(client, None)

    def is_down(self, client: str) -> bool | None:
        """None if reachable, else whether calls hang."""
        with self._lock:
            return self._down.get(client)

    # -- inspection for tests --------------------------------------------------------------

    def lease_expiry(self, lease_id: int) -> float | None:
        """When the lease will expire (before granularity rounding), or None if gone."""
        with self._lock:
            self._expire()
            lease = self._leases.get(lease_id)
            return None if lease is None else lease.expires_at

    def dump(self) -> dict[str, str]:
        with self._lock:
            self._expire()
            return {k: v for k, (v, _) in self._kv.items()}

    # -- internals used by MemoryStore -----------------------------------------------------

    def _effective_expiry(self, lease: _Lease) -> float:
        g = self.expiry_granularity
        if g <= 0:
            return lease.expires_at
        # The lessor runs at multiples of g; the lease goes at the first run >= expiry.
        runs = -(-lease.expires_at // g)  # ceil
        return runs * g

    def _expire(self) -> None:
        now = self.clock.now()
        dead = [i for i, ls in self._leases.items() if now >= self._effective_expiry(ls)]
        for lease_id in dead:
            self._drop_lease(lease_id)

    def _drop_lease(self, lease_id: int) -> None:
        self._leases.pop(lease_id, None)
        for key in [k for k, (_, ls) in self._kv.items() if ls == lease_id]:
            del self._kv[key]

    def _check_lease(self, lease: int | None) -> None:
        if lease is not None and lease not in self._leases:
            raise LeaseExpired(f"lease {lease:x} not found")


class MemoryStore(Store):
    """One client's view of a ``MemoryBackend``. ``client`` names it for fault injection."""

    def __init__(self, backend: MemoryBackend, client: str, default_timeout: float = 0.5) -> None:
        self.backend = backend
        self.client = client
        self.default_timeout = default_timeout

    def _enter(self, timeout: float | None) -> None:
        hang = self.backend.is_down(self.client)
        if hang is None:
            self.backend._expire()
            return
        if hang:
            clock = self.backend.clock
            if not isinstance(clock, FakeClock):
                raise TypeError("hanging partitions need a FakeClock")
            clock.advance(self.default_timeout if timeout is None else timeout)
        raise StoreUnavailable(f"{self.client}: store unreachable")

    def member_ready(self, endpoint: str, key: str, timeout: float | None = None) -> bool:
        with self.backend._lock:
            reachable = self.backend.is_down(self.client) is None
            return reachable and endpoint not in self.backend.members_behind

    def grant_lease(self, ttl: float, timeout: float | None = None) -> int:
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        with self.backend._lock:
            self._enter(timeout)
            lease_id = next(self.backend._ids)
            now = self.backend.clock.now()
            self.backend._leases[lease_id] = _Lease(ttl=ttl, expires_at=now + ttl)
            return lease_id

    def keepalive(self, lease_id: int, timeout: float | None = None, confirm: bool = True) -> float:
        with self.backend._lock:
            self._enter(timeout)
            lease = self.backend._leases.get(lease_id)
            if lease is None:
                raise LeaseExpired(f"lease {lease_id:x} not found")
            lease.expires_at = self.backend.clock.now() + lease.ttl
            return lease.ttl

    def revoke(self, lease_id: int, timeout: float | None = None) -> None:
        with self.backend._lock:
            self._enter(timeout)
            self.backend._drop_lease(lease_id)

    def get(self, key: str, timeout: float | None = None) -> str | None:
        with self.backend._lock:
            self._enter(timeout)
            item = self.backend._kv.get(key)
            return None if item is None else item[0]

    def get_prefix(self, prefix: str, timeout: float | None = None) -> dict[str, str]:
        with self.backend._lock:
            self._enter(timeout)
            return {k: v for k, (v, _) in self.backend._kv.items() if k.startswith(prefix)}

    def get_range(self, start: str, end: str, timeout: float | None = None) -> dict[str, str]:
        # str order is code point order, which is UTF-8's byte order: etcd's order
        with self.backend._lock:
            self._enter(timeout)
            return {k: v for k, (v, _) in self.backend._kv.items() if start <= k < end}

    def put(
        self, key: str, value: str, lease: int | None = None, timeout: float | None = None
    ) -> None:
        with self.backend._lock:
            self._enter(timeout)
            self.backend._check_lease(lease)
            self.backend._kv[key] = (value, lease)

    def delete(self, key: str, timeout: float | None = None) -> bool:
        with self.backend._lock:
            self._enter(timeout)
            return self.backend._kv.pop(key, None) is not None

    def delete_prefix(self, prefix: str, timeout: float | None = None) -> int:
        with self.backend._lock:
            self._enter(timeout)
            keys = [k for k in self.backend._kv if k.startswith(prefix)]
            for k in keys:
                del self.backend._kv[k]
            return len(keys)

    def compare_and_delete(
        self, key: str, expected_value: str, timeout: float | None = None
    ) -> bool:
        with self.backend._lock:
            self._enter(timeout)
            item = self.backend._kv.get(key)
            if item is None or item[0] != expected_value:
                return False
            del self.backend._kv[key]
            return True

    def transaction(
        self, compares: Sequence[Compare], writes: Sequence[Write], timeout: float | None = None
    ) -> bool:
        if not writes:
            raise ValueError("a transaction needs at least one write")
        with self.backend._lock:
            self._enter(timeout)
            for c in compares:
                item = self.backend._kv.get(c.key)
                if (None if item is None else item[0]) != c.value:
                    # as etcd's read-back: the first write already holds (a retry)
                    first = writes[0]
                    return first.value is not None and self.backend._kv.get(first.key) == (
                        first.value,
                        first.lease,
                    )
            for w in writes:
                if w.value is not None:
                    self.backend._check_lease(w.lease)
            for w in writes:
                if w.value is None:
                    self.backend._kv.pop(w.key, None)
                else:
                    self.backend._kv[w.key] = (w.value, w.lease)
            return True

    def compare_and_put(
        self,
        key: str,
        expected: str | None,
        new: str,
        lease: int | None = None,
        timeout: float | None = None,
    ) -> bool:
        with self.backend._lock:
            self._enter(timeout)
            item = self.backend._kv.get(key)
            current = None if item is None else item[0]
            if current != expected:
                return False
            self.backend._check_lease(lease)
            self.backend._kv[key] = (new, lease)
            return True
