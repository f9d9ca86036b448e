"""A watched copy of one key range of etcd: the agents' view without reading it every tick.

Why: every agent used to read its cluster's whole state every 0.1 s, so etcd's load grew with
nodes x keys (issue 16 measured 50 agents taking a whole core). Kubernetes' informers and
Patroni's etcd3 watcher do what this does: read the range once, then follow one watch stream
of its changes. Cost: O(changes), not O(nodes) per tick.

Correctness rules, each from a way a watch goes wrong:

* **Nothing missed.** A stream that breaks (its member killed, a leader change that cut it,
  a stall) is reopened on another member from the revision after the last one applied, so
  etcd replays what came meanwhile. If etcd compacted that revision away it says so
  (``compact_revision``); then the range is read again at one revision and the watch resumes
  after it (a revision-checked resync).
* **Never stale while looking current.** The stream asks for progress notifications
  (etcd's ``--experimental-watch-progress-notify-interval``, 1 s in the etcd role): a quiet
  stream still says "you have everything up to revision R" every second. ``heard_at`` is when
  the last such word (or event) arrived; a reader trusts the copy only while that is recent
  (``MirrorReader``). A member cut off from its leader ends its streams (``hasleader``), and a
  stream silent for ``stall_after`` is dropped and reopened elsewhere.
* **Lock-free reads.** The copy is an immutable ``MirrorState`` replaced on each change, so
  the agents' threads read it without locking.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from clusterctl.agent.store.base import StoreError

log = logging.getLogger(__name__)

# etcd's progress notifications come this often (the etcd role's setting); a copy not heard
# from for STALE_AFTER is not served, a stream silent for STALL_AFTER is reopened elsewhere.
PROGRESS_INTERVAL = 1.0
STALE_AFTER = 1.5 * PROGRESS_INTERVAL + 0.2
STALL_AFTER = 2 * PROGRESS_INTERVAL + 0.5
# after a stream that brought nothing, the next is opened this long later, twice as long
# after each further one, at most _REOPEN_PAUSE_MAX (hundreds of agents must not hammer an
# etcd that refuses their streams)
_REOPEN_PAUSE = 0.2
_REOPEN_PAUSE_MAX = 5.0


@dataclass(frozen=True)
class MirrorState:
    """The copy at one moment: every key of the range at ``revision``; ``heard_at``
    (monotonic) is when the store last vouched for it (an event or a progress word)."""

    kv: Mapping[str, str]
    revision: int
    heard_at: float


class _Stream(Protocol):
    def next(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class WatchSource(Protocol):
    """What the mirror needs of a store (``EtcdStore``; the unit tests' fake)."""

    def range_at_revision(
        self, start: str, end: str, timeout: float | None = None
    ) -> tuple[dict[str, str], int]: ...

    def open_watch(
        self,
        start: str,
        end: str,
        after_revision: int,
        stall_timeout: float,
        fresh_token: bool = False,
    ) -> _Stream: ...


def _text(encoded: str) -> str:
    return base64.b64decode(encoded).decode()


class Compacted(Exception):
    """The revision a watch should resume from is compacted away: read the range again."""


class WatchRefused(StoreError):
    """etcd cancelled the watch for its credentials (a token it does not know: it expired,
    or the member restarted): the next one is opened with a new token."""


_AUTH_REFUSALS = ("auth token", "Unauthenticated", "user name is empty")


class KeyspaceMirror:
    """Follows ``[start, end)`` from a thread of its own (``start``/``stop``); ``state`` is the
    latest ``MirrorState`` (None until the first read). Listeners are called (from the
    mirror's thread, so they must be quick: set an Event) after every change of the keys,
    with the keys that changed (None after reading the whole range: any may have)."""

    def __init__(
        self,
        source: WatchSource,
        start: str,
        end: str,
        clock: Callable[[], float] = time.monotonic,
        stall_after: float = STALL_AFTER,
        stale_after: float = STALE_AFTER,
    ) -> None:
        self.source = source
        self.start_key = start
        self.end_key = end
        self.clock = clock
        self.stall_after = stall_after
        self.stale_after = stale_after
        self.state: MirrorState | None = None
        self.resyncs = 0  # whole-range reads (the first, then one per compaction)
        self.reopens = 0  # streams opened after one broke
        self._listeners: list[Callable[[tuple[str, ...] | None], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream: _Stream | None = None
        self._delivered = False  # the current (or last) stream vouched for the copy
        self._fresh_token = False  # the last stream was refused for its token

    def add_listener(self, callback: Callable[[tuple[str, ...] | None], None]) -> None:
        self._listeners.append(callback)

    def fresh(self, now: float) -> MirrorState | None:
        """The copy if the store vouched for it within ``stale_after`` of ``now``, else None."""
        state = self.state
        if state is None or now - state.heard_at > self.stale_after:
            return None
        return state

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="keyspace-mirror", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def run(self) -> None:
        """Until ``stop``: read the range if needed, then follow its changes."""
        need_range = True
        barren = 0  # streams in a row that vouched for nothing
        while not self._stop.is_set():
            try:
                if need_range:
                    self.resync()
                    need_range = False
                self.follow()
            except Compacted:
                need_range = True
            except StoreError as exc:
                if barren == 0:  # the first of a run is news; the rest would flood the log
                    log.info("watch of %s interrupted (%s), reopening", self.start_key, exc)
                self.reopens += 1
                self._fresh_token = isinstance(exc, WatchRefused)
                # a stream that brought something is reopened at once; after one that did
                # not (no member accepts one, or refuses it), wait, longer each time
                barren = 0 if self._delivered else barren + 1
                pause = 0.0 if barren == 0 else _REOPEN_PAUSE * 2 ** (barren - 1)
                self._stop.wait(min(pause, _REOPEN_PAUSE_MAX))
            except Exception:  # a bug must not end the copy: readers fall back to reads
                log.exception("keyspace mirror failed")
                need_range = True
                self._stop.wait(_REOPEN_PAUSE)

    def resync(self) -> None:
        """Read the whole range at one revision (a copy vouched for as of when it was sent)."""
        sent = self.clock()
        kv, revision = self.source.range_at_revision(self.start_key, self.end_key)
        self.resyncs += 1
        self._publish(MirrorState(MappingProxyType(dict(kv)), revision, sent), None)

    def follow(self) -> None:
        """Apply one stream's messages until it breaks (``StoreError``) or is compacted."""
        assert self.state is not None
        self._delivered = False  # before opening: a stream that never opened brought nothing
        stream = self.source.open_watch(
            self.start_key,
            self.end_key,
            self.state.revision,
            self.stall_after,
            fresh_token=self._fresh_token,
        )
        self._stream = stream
        try:
            while not self._stop.is_set():
                self._delivered = self.apply(stream.next()) or self._delivered
        finally:
            self._stream = None
            stream.close()

    def apply(self, message: Mapping[str, Any]) -> bool:
        """One watch message: events, a progress word, or the stream's end. Returns whether
        it vouched for the copy (events or progress, not the stream's creation)."""
        state = self.state
        assert state is not None
        if message.get("compact_revision"):
            raise Compacted(f"revision {state.revision + 1} is compacted")
        if message.get("canceled"):
            reason = str(message.get("cancel_reason") or "no reason")
            if any(refusal in reason for refusal in _AUTH_REFUSALS):
                raise WatchRefused(f"watch refused: {reason}")
            raise StoreError(f"watch cancelled: {reason}")
        if message.get("created"):
            return False  # says nothing about what has been sent yet
        events = message.get("events") or []
        now = self.clock()
        if not events:  # a progress notification: everything up to its revision was sent
            revision = int(message.get("header", {}).get("revision", 0) or 0)
            self.state = MirrorState(state.kv, max(state.revision, revision), now)
            return True
        kv = dict(state.kv)
        revision = state.revision
        changed = []
        for event in events:
            record = event.get("kv", {})
            key = _text(record.get("key", ""))
            changed.append(key)
            if event.get("type") == "DELETE":
                kv.pop(key, None)
            else:
                kv[key] = _text(record.get("value", ""))
            revision = max(revision, int(record.get("mod_revision", 0) or 0))
        self._publish(MirrorState(MappingProxyType(kv), revision, now), tuple(changed))
        return True

    def _publish(self, state: MirrorState, changed: tuple[str, ...] | None) -> None:
        self.state = state
        for callback in self._listeners:
            callback(changed)
