"""The abstract store the HA logic is written against (Patroni's habit: the contract is in
the docstrings, and every implementation — etcd, in-memory — must honour it exactly).

Model (the subset of etcd v3 the agent needs):

* Keys and values are ``str``; structured values are JSON text.
* A *lease* has a TTL in seconds. ``keepalive`` restarts its countdown. When a lease expires
  (or is revoked) every key bound to it is deleted atomically. A client must assume that the
  countdown restarts no earlier than the moment it *sent* the keepalive: that is the instant
  from which the agent measures its fencing deadline.
* Every method takes an optional ``timeout`` (seconds): the call returns or raises within
  roughly that time. The holder passes the time left before its fencing deadline so that a
  hung request can never keep it holding resources past that deadline.
* Errors: ``StoreUnavailable`` means "no answer, the outcome is unknown" (a write may or may
  not have been applied); ``LeaseExpired`` means the store answered that the lease is gone.
  Both derive from ``StoreError``. No other exception may escape a method, except
  ``ValueError``/``TypeError`` for caller bugs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


class StoreError(Exception):
    """Base class of every error a store raises."""


class StoreUnavailable(StoreError):
    """No endpoint answered in time (partition, no quorum, store down). Outcome unknown."""


class LeaseExpired(StoreError):
    """The store answered that the lease does not exist (expired or revoked)."""


@dataclass(frozen=True)
class Compare:
    """A transaction's condition: ``key`` holds ``value`` (None: ``key`` does not exist)."""

    key: str
    value: str | None


@dataclass(frozen=True)
class Write:
    """A transaction's write: ``key`` set to ``value`` (bound to ``lease`` if given), or
    deleted when ``value`` is None."""

    key: str
    value: str | None
    lease: int | None = None


class Store(ABC):
    """A linearizable key-value store with leases and compare-and-swap transactions."""

    @abstractmethod
    def grant_lease(self, ttl: float, timeout: float | None = None) -> int:
        """Create a lease that expires ``ttl`` seconds from now unless kept alive.

        Returns its id (an int > 0). The store may round ``ttl`` up (etcd raises TTLs below
        its minimum and works in whole seconds); callers must size their own deadlines from
        the TTL they asked for, which is never longer than the one granted.
        """

    @abstractmethod
    def keepalive(self, lease_id: int, timeout: float | None = None, confirm: bool = True) -> float:
        """Restart the lease's countdown. Returns the remaining TTL in seconds (> 0).

        Raises ``LeaseExpired`` if the lease no longer exists; keys bound to it are gone.
        ``confirm``: return only once the renewal is known to count cluster-wide (a store
        whose members can be cut off checks that its quorum still stands behind the one
        that renewed); a caller that measures no deadline from it passes False.
        """

    @abstractmethod
    def revoke(self, lease_id: int, timeout: float | None = None) -> None:
        """Delete the lease and every key bound to it. Revoking an unknown lease is a no-op."""

    @abstractmethod
    def get(self, key: str, timeout: float | None = None) -> str | None:
        """Return the value of ``key``, or ``None`` if it does not exist."""

    @abstractmethod
    def get_prefix(self, prefix: str, timeout: float | None = None) -> dict[str, str]:
        """Return every key starting with ``prefix`` and its value, read at one revision."""

    @abstractmethod
    def get_range(self, start: str, end: str, timeout: float | None = None) -> dict[str, str]:
        """Return every key ``k`` with ``start <= k < end`` (byte order) and its value, read
        at one revision. The loop reads the cluster's state so, leaving its history out."""

    @abstractmethod
    def put(
        self, key: str, value: str, lease: int | None = None, timeout: float | None = None
    ) -> None:
        """Set ``key`` to ``value``, bound to ``lease`` if given (else persistent).

        Raises ``LeaseExpired`` if ``lease`` does not exist.
        """

    @abstractmethod
    def delete(self, key: str, timeout: float | None = None) -> bool:
        """Delete ``key``. Returns whether it existed."""

    @abstractmethod
    def delete_prefix(self, prefix: str, timeout: float | None = None) -> int:
        """Delete every key starting with ``prefix``. Returns how many were deleted."""

    def create_if_absent(
        self, key: str, value: str, lease: int | None = None, timeout: float | None = None
    ) -> bool:
        """Atomically create ``key`` only if it does not exist. Returns whether it did.

        This is the election primitive: of any number of concurrent callers at most one gets
        ``True`` for a key, and nobody else gets ``True`` until that key is deleted (by
        ``delete``, ``compare_and_delete`` or the expiry of its lease). Raises
        ``LeaseExpired`` if ``lease`` does not exist. Every backend gets it from
        ``compare_and_put`` with ``expected=None``.
        """
        return self.compare_and_put(key, None, value, lease=lease, timeout=timeout)

    def member_ready(self, endpoint: str, key: str, timeout: float | None = None) -> bool:
        """Whether the store member behind ``endpoint`` serves the cluster's data itself:
        it answers a linearizable read (of ``key``, one the client may read), so it sees a
        leader and has applied everything committed before that read (a restarted member has
        caught up). Never raises: any failure is ``False``. A store without members of its
        own is always ready."""
        return True

    @abstractmethod
    def compare_and_delete(
        self, key: str, expected_value: str, timeout: float | None = None
    ) -> bool:
        """Atomically delete ``key`` only if its value is ``expected_value``. Returns success.

        Used to release a group: a holder deletes the leader key only if it is still its own.
        """

    @abstractmethod
    def transaction(
        self, compares: Sequence[Compare], writes: Sequence[Write], timeout: float | None = None
    ) -> bool:
        """Atomically apply every write of ``writes`` only if every compare holds. Returns
        whether they were applied.

        For a hand-over in one round trip: a holder deletes its leader and owner keys
        together, a new holder creates the leader key and names itself owner together. If a
        first attempt was applied but its answer lost, a retry reports ``True`` when the first
        write is a put whose key now holds exactly that value and lease (as ``compare_and_put``
        does), else ``False``: callers read the keys again. Raises ``LeaseExpired`` if a
        write's lease does not exist.
        """

    @abstractmethod
    def compare_and_put(
        self,
        key: str,
        expected: str | None,
        new: str,
        lease: int | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Atomically set ``key`` to ``new`` only if its value is ``expected``.

        ``expected=None`` means "only if the key does not exist" (like ``create_if_absent``).
        Returns whether the write happened.
        """
