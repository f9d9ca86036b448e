"""Where the HA loop reads its cluster's state from each step.

``DirectReader`` reads it from the store (one range read per step: fine for a handful of
nodes); ``MirrorReader`` serves the watched copy of a ``KeyspaceMirror`` (shared by every
reader of one process) while the store vouches for it, and reads the store itself otherwise.
The loop's safety does not rest on either: the fencing deadline is checked from the clock
before any read, and every write that matters is a compare-and-swap in the store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from clusterctl.agent.store.base import Store
from clusterctl.agent.store.watch import KeyspaceMirror, WatchSource


class StateReader(Protocol):
    """Reads ``[start, end)`` of the store for one step. ``serving``: the last read came
    from a copy kept current by changes (the loop may then sleep until a change wakes it)."""

    serving: bool

    def read(self, timeout: float, current: bool = False) -> Mapping[str, str]:
        """The range's keys and values at one revision; raises the store's errors.
        ``current``: read the store itself, as of now (a holder's read)."""
        ...


class DirectReader:
    """One range read per step."""

    serving = False

    def __init__(self, store: Store, start: str, end: str) -> None:
        self.store = store
        self.start = start
        self.end = end

    def read(self, timeout: float, current: bool = False) -> Mapping[str, str]:
        return self.store.get_range(self.start, self.end, timeout=timeout)


class MirrorReader:
    """The mirror's copy while it is fresh, else a range read of the store; a read of the
    store when asked for the ``current`` state.

    Holders ask for it: a copy, however fresh, can lag behind a write this node just made
    (its own leader key, taken a moment ago, not yet in the copy: the holder would think it
    lost the group and stop it). There is one holder per group, so this costs etcd what the
    groups cost, not the nodes.

    Never goes back in time: a copy behind a revision this reader already served (a direct
    read while the stream caught up after a reconnect) is not served; reading the store
    again is. Without that rule an agent could see a member key, then not see it (taken for
    a vanished member: a hold-off for nothing), then see it again."""

    def __init__(
        self, store: WatchSource, mirror: KeyspaceMirror, clock: Callable[[], float]
    ) -> None:
        self.store = store
        self.mirror = mirror
        self.clock = clock
        self.serving = False
        self.direct_reads = 0
        self._served_revision = 0

    def read(self, timeout: float, current: bool = False) -> Mapping[str, str]:
        state = None if current else self.mirror.fresh(self.clock())
        if state is not None and state.revision >= self._served_revision:
            self.serving = True
            self._served_revision = state.revision
            return state.kv
        self.serving = False
        self.direct_reads += 1
        kv, revision = self.store.range_at_revision(
            self.mirror.start_key, self.mirror.end_key, timeout=timeout
        )
        self._served_revision = max(self._served_revision, revision)
        return kv
