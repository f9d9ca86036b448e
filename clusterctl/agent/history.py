"""The failover history: what every agent did, when and why, kept in etcd for a bounded time.

An entry is one transition on one node: a group acquired (and why it was free), released,
fenced (and why), lost, a resource that failed its monitor or was restarted in place, standby
switched, an LB backend going down or up, an operator's drain or weight change, the agent
starting or stopping. ``clusterctl history`` and ``status`` read them back; so does the API
(``GET /v1/history``).

Recording never blocks the loop: ``History.record`` appends to a bounded in-memory queue and
``HistoryWriter`` (the daemon runs it in a thread of its own, with its own store client) puts
the entries into etcd. A node cut off from etcd keeps its entries and writes them once it can:
the fence of a partitioned holder appears after the heal, stamped with the time it happened.

Bounded twice: every entry is bound to an etcd lease of ``retention`` seconds that nobody keeps
alive (a writer grants a fresh one every ``retention / 10``), so etcd deletes entries between
``retention`` and 1.1 x ``retention`` after they were written, with no sweeper of ours; and at
most ``MAX_PENDING`` entries wait in memory (the oldest are dropped and counted).

Keys: ``~history/<microseconds since the epoch, 16 digits>-<node>-<n>`` under the cluster's
root. ``~`` sorts after every state key, so the loop's read of the state (``Keys.state_end``)
never carries the history with it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from clusterctl.agent.clock import Clock, MonotonicClock
from clusterctl.agent.keys import Keys
from clusterctl.agent.store.base import LeaseExpired, Store, StoreError

log = logging.getLogger(__name__)

MAX_PENDING = 1000  # entries waiting for etcd (a node cut off for long keeps the newest)
DEFAULT_RETENTION = 7 * 24 * 3600.0  # seconds an entry stays in etcd
FLUSH_INTERVAL = 0.5  # seconds between the writer's attempts when nothing wakes it

# What an entry can say happened (``event``); the reason says why, in words.
EVENTS = (
    "acquired",  # this node took the group; reason: why it was free
    "released",  # it stopped the group and gave it up; reason: why
    "fenced",  # it stopped the group because its lease could not be kept
    "lost",  # its leader key vanished under it
    "retaken",  # its lease was revoked before it could expire; it kept the group (peers.py)
    "monitor-failed",  # a resource failed its check; reason: which, and the fail count
    "restarted",  # a failed resource was restarted in place
    "standby",
    "unstandby",
    "backend-down",  # the LB on this node stopped sending to a backend
    "backend-up",
    "backend-changed",  # an operator's drain, undrain, weight or removal (through this node)
    "agent-started",
    "agent-stopped",
    # fencing groups (agent/fencing.py): the new holder powers the previous owner off first
    "fence-begun",  # reason: whom, and why
    "fence-done",  # the owner is off (or stopped its resources, or an operator confirmed it)
    "fence-failed",  # reason: the device's error; the group stays stopped, retried
    "fence-confirmed",  # an operator said the node is off (`clusterctl fence --confirm`)
    # live migration (resources/vm.py): a planned move of a running guest
    "migrated",  # the holder sent the guest to the target; reason: the times qemu measured
    "move-failed",  # a planned move could not be made; reason: why; the group ran on
)


@dataclass(frozen=True)
class HistoryEntry:
    at: float  # seconds since the epoch (wall clock: entries of all nodes are merged by it)
    node: str
    event: str
    group: str = ""
    reason: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> HistoryEntry | None:
        """The entry in ``text``, or None for anything that is not one (never raises)."""
        try:
            data = json.loads(text)
        except ValueError:
            return None
        return HistoryEntry.from_dict(data)

    @staticmethod
    def from_dict(data: Any) -> HistoryEntry | None:
        """The entry in parsed JSON (an API answer's row), or None (never raises)."""
        try:
            entry = HistoryEntry(
                at=float(data["at"]),
                node=str(data["node"]),
                event=str(data["event"]),
                group=str(data.get("group", "")),
                reason=str(data.get("reason", "")),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        return entry


class History:
    """This node's entries not yet in etcd. Thread-safe: the loop and the API record, the
    writer takes."""

    def __init__(
        self, node: str, wall: Callable[[], float] = time.time, max_pending: int = MAX_PENDING
    ) -> None:
        self.node = node
        self.wall = wall
        self._pending: deque[HistoryEntry] = deque()
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self.dropped = 0  # entries lost because too many waited
        self.wake = threading.Event()  # set on every record: the writer flushes soon

    def record(self, event: str, group: str = "", reason: str = "") -> HistoryEntry:
        if event not in EVENTS:
            raise ValueError(f"unknown history event {event!r}")
        entry = HistoryEntry(self.wall(), self.node, event, group, reason)
        with self._lock:
            if len(self._pending) >= self._max_pending:
                self._pending.popleft()
                self.dropped += 1
            self._pending.append(entry)
        self.wake.set()
        return entry

    def pending(self) -> list[HistoryEntry]:
        """The entries waiting, oldest first (left in place)."""
        with self._lock:
            return list(self._pending)

    def written(self, entry: HistoryEntry) -> None:
        """``entry`` is in etcd: forget it (if still queued)."""
        with self._lock:
            if self._pending and self._pending[0] is entry:
                self._pending.popleft()


class HistoryWriter:
    """Puts a ``History``'s entries into etcd, each bound to a lease of ``retention`` s."""

    def __init__(
        self,
        history: History,
        store: Store,
        keys: Keys,
        retention: float = DEFAULT_RETENTION,
        timeout: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        self.history = history
        self.store = store
        self.keys = keys
        self.retention = retention
        self.timeout = timeout
        self.clock = clock or MonotonicClock()
        self._lease: int | None = None
        self._lease_granted = 0.0
        self._seq = 0
        self._lock = threading.Lock()  # the thread's flush and the shutdown's never overlap

    def flush(self) -> int:
        """Write every pending entry, oldest first; stop at the first store error (the rest
        waits for the next call). Returns how many were written. Never raises StoreError."""
        with self._lock:
            return self._flush()

    def _flush(self) -> int:
        count = 0
        for entry in self.history.pending():
            try:
                self._put(entry)
            except StoreError as exc:
                log.debug("history not written yet: %s", exc)
                break
            self.history.written(entry)
            count += 1
        return count

    def _put(self, entry: HistoryEntry) -> None:
        self._seq += 1
        key = self.keys.history(entry.at, entry.node, self._seq)
        try:
            self.store.put(key, entry.to_json(), self._lease_id(), timeout=self.timeout)
        except LeaseExpired:
            # the bucket's lease expired (retention passed) or etcd lost it: a fresh one
            self._lease = None
            self.store.put(key, entry.to_json(), self._lease_id(), timeout=self.timeout)

    def _lease_id(self) -> int:
        now = self.clock.now()
        if self._lease is None or now - self._lease_granted >= self.retention / 10:
            self._lease = self.store.grant_lease(self.retention, timeout=self.timeout)
            self._lease_granted = now
        return self._lease

    def run(self, stop: threading.Event, interval: float = FLUSH_INTERVAL) -> None:
        """Flush until ``stop`` is set, soon after each record and every ``interval`` s."""
        while not stop.is_set():
            self.history.wake.wait(interval)
            self.history.wake.clear()
            self.flush()


def read_history(
    store: Store,
    keys: Keys,
    group: str | None = None,
    since: float | None = None,
    timeout: float | None = None,
) -> list[HistoryEntry]:
    """Every node's entries in etcd, oldest first; only ``group``'s (and the node-wide ones:
    agent start/stop, standby) if given, only from ``since`` (epoch seconds) if given."""
    start = keys.history_prefix() if since is None else keys.history_since(since)
    raw = store.get_range(start, keys.history_end(), timeout=timeout)
    entries = (HistoryEntry.from_json(raw[k]) for k in sorted(raw))
    return [e for e in entries if e is not None and _matches(e, group)]


NODE_WIDE = {"standby", "unstandby", "agent-started", "agent-stopped"}


def _matches(entry: HistoryEntry, group: str | None) -> bool:
    return group is None or entry.group == group or (not entry.group and entry.event in NODE_WIDE)


def last_failover(entries: Iterable[HistoryEntry], group: str) -> HistoryEntry | None:
    """The latest takeover of ``group`` by a node after another node held it (not its first
    start): what `status` shows as the last failover."""
    found = None
    for entry in entries:
        if entry.group == group and entry.event == "acquired" and entry.reason != FIRST_START:
            found = entry
    return found


FIRST_START = "no node held it"
