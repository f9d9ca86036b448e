"""One resource group on this node: which of its resources run, and starting/stopping them.

Start in order, stop in reverse order. When fencing, exclusive resources go first, VIPs first
of all: they are the ones that must never run twice, and dropping an address takes
milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable

from clusterctl.agent.config import GroupSpec
from clusterctl.agent.resources.base import Resource, ResourceError

TimeoutFor = Callable[[Resource], float]


class GroupRunner:
    """Local state of one group. ``active``: this node holds the leader key and runs (or is
    starting) the group. ``started``: resources this node started and has not stopped."""

    def __init__(self, spec: GroupSpec, resources: list[Resource]) -> None:
        self.spec = spec
        self.resources = resources
        self.active = False
        self.started: set[str] = set()
        self.next_monitor: dict[str, float] = {}
        self.restart_from: str | None = None  # a restart in place in progress (Agent._restart)
        self.restart_until = 0.0
        # fencing: the previous owner being fenced before this node starts the group
        # (Agent._await_fence), when to try again after a failed fence, and whether the
        # start-up cleanup failed to stop something (then we never say "stopped here")
        self.fencing_target: str | None = None
        self.fence_retry_at = 0.0
        self.cleanup_failed = False
        # a live migration this node (the holder) is sending: to whom, and until when
        self.migrating_to: str | None = None
        self.migration_deadline = 0.0

    @property
    def name(self) -> str:
        return self.spec.name

    def prestart_safe(self) -> list[Resource]:
        return [r for r in self.resources if r.prestart_safe]

    def migratable(self) -> list[Resource]:
        return [r for r in self.resources if r.migratable]

    def prepare_incoming(self, resources: list[Resource], timeout_for: TimeoutFor) -> None:
        """As a move target: make each migratable resource wait for its live migration.
        Raises ``ResourceError`` naming the resource; they count as started (a cancelled move
        stops them)."""
        for res in resources:
            try:
                res.prepare_incoming(timeout_for(res))
            except ResourceError as exc:
                raise ResourceError(f"{res.name}: {exc}") from None
            finally:
                self.started.add(res.name)  # even half-made: a stop cleans it up

    def start(
        self, resources: list[Resource], timeout_for: TimeoutFor, checkpoint: Callable[[], None]
    ) -> None:
        """Start ``resources`` in order. ``checkpoint`` runs before each one (it renews the
        lease or aborts by raising when the fencing deadline has passed). A failing start
        raises ``ResourceError`` naming the resource; those already started stay started."""
        for res in resources:
            checkpoint()
            try:
                res.start(timeout_for(res))
            except ResourceError as exc:
                raise ResourceError(f"{res.name}: {exc}") from None
            self.started.add(res.name)

    def stop(
        self,
        timeout_for: TimeoutFor,
        exclusive_first: bool = False,
        only: list[Resource] | None = None,
    ) -> list[str]:
        """Stop the started resources (or those of ``only``) in reverse start order,
        exclusive ones first if asked.

        Never raises: it goes on stopping the others and returns the errors.
        """
        chosen = self.resources if only is None else only
        order = [r for r in reversed(chosen) if r.name in self.started]
        if exclusive_first:
            # VIPs before every other exclusive resource: an address goes in milliseconds, and
            # while it is here this node answers for the group; a load balancer's stop (its
            # checker thread, its rules) may take far longer. Stable: reverse order otherwise.
            order.sort(key=lambda r: (r.spec.type != "vip", not r.exclusive))
        errors = []
        for res in order:
            try:
                res.stop(timeout_for(res))
            except ResourceError as exc:
                errors.append(f"{res.name}: {exc}")
                continue
            self.started.discard(res.name)
        self.next_monitor.clear()
        if only is None:
            self.restart_from = None  # the whole group stopped: no restart left to finish
        return errors

    def schedule_monitors(self, now: float) -> None:
        for res in self.resources:
            self.next_monitor[res.name] = now + self.monitor_interval(res)

    def monitor_interval(self, res: Resource) -> float:
        return res.spec.monitor_interval or self.spec.monitor_interval

    def due_monitors(self, now: float) -> list[Resource]:
        return [
            r
            for r in self.resources
            if r.name in self.started and self.next_monitor.get(r.name, now) <= now
        ]

    def after(self, res: Resource) -> list[Resource]:
        """``res`` and every resource after it in start order (what a restart touches)."""
        index = self.resources.index(res)
        return self.resources[index:]
