"""Holders' own word on their leases, asked over the agent API: a standby's second source.

Why: Debian's etcd 3.4.23 lets a leader that resumes after a freeze revoke the leases it
thinks expired although the new leader renewed them meanwhile (etcd issues 12528 and 15247,
fixed in 3.4.28 and 3.5.11). A healthy holder's lease vanished, its leader key with it, and a
standby that trusted etcd alone took the group: a failover nothing had caused (seen in CI,
and in 1 of 3 three-second freezes of etcd's leader). The holder notices at its next renewal
and takes its groups back with a new lease (``Agent._take_back``); a standby that heard from
the holder a moment ago that its fencing deadline still lies ahead asks it once more and,
while it still says so, leaves the group alone until that deadline plus ``fence_margin``.

That wait never delays a real failover: a holder that died renews nothing after it last
answered, and etcd expires its lease no earlier than its deadline plus ``fence_margin``
(member.py), which is when the standby's wait ends. A holder that stopped cleanly (its
leader key released, its lease revoked) answers the second question with nothing held, or
refuses the connection: the standby takes the group a few milliseconds later.

The words are asked by a thread of the daemon, never by the loop: a peer that does not
answer (crashed, frozen, cut off) costs the loop nothing. Its last word stays, bounded by
the deadline it gave; a refused connection (no agent runs there) drops it.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from clusterctl.agent.clock import Clock

log = logging.getLogger(__name__)

ASK_TIMEOUT = 0.2  # seconds a peer gets to answer (a live one answers in a few ms)


@dataclass(frozen=True)
class PeerWord:
    """What a peer said when asked at ``asked_at`` (this node's monotonic clock)."""

    node: str
    asked_at: float
    holding: tuple[str, ...]
    # this node's clock: the peer's fencing deadline as it reported it, counted from when
    # we asked (never later than the real one: the peer measured it after we asked)
    deadline: float


def parse_word(node: str, answer: Any, asked_at: float) -> PeerWord | None:
    """A word from the peer's ``/v1/health`` answer; None when it is not that peer's."""
    if not isinstance(answer, dict) or answer.get("node") != node:
        return None
    left = answer.get("lease_time_left")
    holding = answer.get("holding")
    if not isinstance(left, int | float) or not isinstance(holding, list):
        return None
    valid = answer.get("lease_valid") is True
    return PeerWord(
        node=node,
        asked_at=asked_at,
        holding=tuple(str(g) for g in holding) if valid else (),
        deadline=asked_at + max(0.0, float(left)) if valid else asked_at,
    )


class Peers(Protocol):
    """What the HA loop asks of a peer watch (``PeerWatch``; the unit tests' simulation)."""

    def latest(self, node: str) -> PeerWord | None:
        """The last word heard from ``node``; None if its last ask failed."""

    def refresh(self, node: str) -> None:
        """Ask ``node`` again as soon as possible (not waiting for the next interval)."""


class PeerWatch:
    """Asks each node that holds a group (``targets()``: node -> address) for its word."""

    def __init__(
        self,
        targets: Callable[[], dict[str, str]],
        ask: Callable[[str, float], Any],
        clock: Clock,
        interval: float,
        timeout: float = ASK_TIMEOUT,
    ) -> None:
        """``ask(address, timeout)`` returns the peer's ``/v1/health`` answer or raises; an
        exception with a true ``refused`` attribute means no agent listens there."""
        self.targets = targets
        self.ask = ask
        self.clock = clock
        self.interval = interval
        self.timeout = timeout
        self._words: dict[str, PeerWord] = {}
        self._wake = threading.Event()

    def latest(self, node: str) -> PeerWord | None:
        """The last word heard from ``node`` (safe from any thread)."""
        return self._words.get(node)

    def refresh(self, node: str) -> None:
        self._wake.set()

    def poll(self) -> None:
        """Ask every target once. A peer that does not answer keeps its last word (it ages:
        the deadline it gave passes); one that refuses the connection has none."""
        words: dict[str, PeerWord] = {}
        for node, address in sorted(self.targets().items()):
            try:
                ipaddress.ip_address(address)  # a member key's address, never a host name
            except ValueError:
                continue
            asked_at = self.clock.now()
            try:
                word = parse_word(node, self.ask(address, self.timeout), asked_at)
            except Exception as exc:  # noqa: BLE001 - whatever failed, no new word
                log.debug("no word from %s: %s", node, exc)
                last = self._words.get(node)
                if last is not None and not getattr(exc, "refused", False):
                    words[node] = last
                continue
            if word is not None:
                words[node] = word
        self._words = words  # one assignment: readers see the old dict or the new one

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if not stop.is_set():
                self.poll()
