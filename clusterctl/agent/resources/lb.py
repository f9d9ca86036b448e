"""The load balancer as a resource: a front end on the group's VIP over the backends.

Backends live in etcd (``backends/<node>``: address, port, weight, state); the agent hands
them over every loop step (``set_backends``). While the resource runs, a checker thread
health-checks them (nft engine; HAProxy checks its servers itself), converges the engine at
once when the live set changes, and keeps per-backend statistics (health, active
connections) for the API. Nothing here blocks the HA loop for longer than one engine call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from clusterctl.agent.config import ResourceSpec
from clusterctl.agent.lb.command import LbError
from clusterctl.agent.lb.engine import LbEngine, make_engine
from clusterctl.agent.lb.health import CheckFn, HealthTracker, check_backends, http_check
from clusterctl.agent.lb.health import live_backends as healthy_live_backends
from clusterctl.agent.lb.model import Backend, BackendCounters, LbSpec
from clusterctl.agent.resources.base import Resource, ResourceError
from clusterctl.agent.resources.runner import CommandRunner

log = logging.getLogger(__name__)

STATS_INTERVAL = 1.0  # seconds between active-connection counts (conntrack / HAProxy stats)
STOP_JOIN = 0.05  # seconds a stop waits for the checker thread to notice it


@dataclass(frozen=True)
class BackendStats:
    """What the holder knows of one backend, published to the API."""

    node: str
    address: str
    port: int
    weight: int
    state: str  # active | draining | disabled (from etcd)
    health: str  # up | down | unknown
    active_connections: int | None
    in_rotation: bool  # receives new connections now


class LoadBalancer(Resource):
    """Params: those of ``LbSpec`` (address, port, backend_port, engine, algorithm, ...)."""

    def __init__(
        self,
        spec: ResourceSpec,
        runner: CommandRunner,
        check: CheckFn = http_check,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(spec, runner)
        self.lb = LbSpec.from_params(spec.params)
        self.check = check
        self.clock = clock
        self.engine: LbEngine = make_engine(self.lb, runner)
        # A backend that appears while we run must pass `rise` checks before it gets traffic
        # (scale out without failed requests); those present at start are seeded instead.
        self.tracker = HealthTracker.for_spec(self.lb, initially_healthy=False)
        self._lock = threading.Lock()  # guards the backends, the tracker and engine calls
        self._backends: tuple[Backend, ...] = ()
        self._pending: tuple[Backend, ...] | None = None  # from the loop, not yet applied
        self._stop = threading.Event()  # the current checker's
        # bumped by every start and stop: a checker thread converges only while the
        # generation it was started in is current (an old one may linger in a health check)
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._counters: dict[str, BackendCounters] = {}
        self._counted_at = float("-inf")
        self.last_error = ""
        self.stats: tuple[BackendStats, ...] = ()  # replaced whole, read without locking

    # -- inputs ------------------------------------------------------------------------------

    def set_backends(self, backends: Iterable[Backend]) -> None:
        """The registered backends (from etcd), as of this loop step. Never waits for the
        checker's lock: if it is busy, the checker applies them on its next round."""
        self._pending = tuple(sorted(backends, key=lambda b: b.node))  # one reference: atomic
        self._apply_pending(wait=False)

    def _apply_pending(self, wait: bool, generation: int | None = None) -> None:
        if not self._lock.acquire(blocking=wait):
            return
        try:
            pending, self._pending = self._pending, None
            changed = pending is not None and pending != self._backends
            if pending is not None:
                self._backends = pending
                self.tracker.retain(b.node for b in pending)
        finally:
            self._lock.release()
        if changed and self.running():
            self._converge(wait=wait, generation=generation)

    def live(self) -> tuple[Backend, ...]:
        """Backends that get new connections now: active, weight > 0 and, where the agent
        checks them, healthy."""
        if self.engine.checks_backends:
            return tuple(b for b in self._backends if b.state == "active" and b.weight > 0)
        return healthy_live_backends(self._backends, self.tracker.snapshot(self._nodes()))

    def _nodes(self) -> list[str]:
        return [b.node for b in self._backends]

    # -- Resource ----------------------------------------------------------------------------

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float) -> None:
        if not self.engine.checks_backends:
            # The first map must not wait for the checker thread. But this runs in the HA
            # loop, whose lease must be renewed meanwhile (``timeout`` is bounded by the
            # lease's time left): bound the seed checks by it too. With the full
            # check_timeout (1 s), a dead backend (no ARP answer: after a crash of the LB
            # holder, always) kept every new holder past its fencing deadline, and the group
            # flapped with the VIP up and no rules. A backend too slow for this short check
            # is seeded down and joins after `rise` checks.
            self._check_now(seed=True, check_timeout=min(self.lb.check_timeout, timeout / 2))
        self._converge(raise_errors=True)
        if not self.running():
            self._generation += 1
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._checker,
                args=(self._stop, self._generation),
                name="lb-checker",
                daemon=True,
            )
            self._thread.start()

    def stop(self, timeout: float) -> None:
        # Never wait long for the checker: it may be inside a health check (up to
        # check_timeout), and a fencing holder stops its resources on a deadline. It checks
        # its generation before every converge, under the lock taken here, so no rule
        # comes back.
        self._stop.set()
        self._generation += 1
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=min(max(timeout, 0.01), STOP_JOIN))
        with self._lock:
            try:
                self.engine.remove(timeout)
            except LbError as exc:
                raise ResourceError(str(exc)) from None

    def monitor(self, timeout: float) -> bool:
        if self.running():  # not before start: the start-up cleanup only looks
            # the HA loop must never wait for the checker's lock (it may hold it for a slow
            # `nft`): if busy, the checker is converging anyway
            self._converge(wait=False)
        return self.engine.in_place(timeout)

    # -- work --------------------------------------------------------------------------------

    def _converge(
        self, raise_errors: bool = False, wait: bool = True, generation: int | None = None
    ) -> None:
        """Make the engine's rules match the backends. ``raise_errors``: the start's own
        converge. A checker passes its ``generation`` and does nothing once it is not current
        (a stop began); ``wait=False`` gives up when the lock is busy."""
        if not self._lock.acquire(blocking=wait):
            return
        try:
            if generation is not None and generation != self._generation:
                return
            self.engine.converge(self.lb, self._backends, self.live())
            self.last_error = ""
        except LbError as exc:
            if str(exc) != self.last_error:  # once per distinct error: it repeats every round
                log.warning("%s: the load balancer's rules were not updated: %s", self.name, exc)
            self.last_error = str(exc)
            if raise_errors:
                raise ResourceError(str(exc)) from None
        finally:
            self._lock.release()

    def _check_now(
        self, only_due: bool = False, seed: bool = False, check_timeout: float | None = None
    ) -> None:
        with self._lock:
            backends = self._backends
            due = set(self.tracker.due(self._nodes(), self.clock())) if only_due else None
        targets = [b for b in backends if due is None or b.node in due]
        if not targets:
            return
        spec = self.lb
        if check_timeout is not None:
            spec = replace(spec, check_timeout=max(0.01, check_timeout))
        results = check_backends(targets, spec, self.check)
        now = self.clock()
        with self._lock:
            known = set(self._nodes())
            for node, ok in results.items():
                if node in known:
                    if seed:
                        self.tracker.seed(node, ok, now)
                    else:
                        self.tracker.record(node, ok, now)

    def _checker(self, stop: threading.Event, generation: int) -> None:
        while not stop.is_set():
            try:
                self._apply_pending(wait=True, generation=generation)
                if not self.engine.checks_backends:
                    self._check_now(only_due=True)
                self._converge(generation=generation)
                self._publish()
            except Exception as exc:  # the checker must outlive any single bad round
                if f"checker: {exc}" != self.last_error:
                    log.warning("%s: health checker round failed: %s", self.name, exc)
                self.last_error = f"checker: {exc}"
            stop.wait(min(self.lb.inter, 0.25))

    def _publish(self) -> None:
        now = self.clock()
        backends = self._backends
        if now - self._counted_at >= STATS_INTERVAL:
            try:
                self._counters = self.engine.counters(self.lb, backends, timeout=1.0)
            except (LbError, OSError):
                self._counters = {}
            self._counted_at = now
        live = {b.node for b in self.live()}
        if self.engine.checks_backends:
            health = {n: c.health for n, c in self._counters.items() if c.health is not None}
        else:
            checked = self.tracker.snapshot(self._nodes())
            health = {n: "up" if h.healthy else "down" for n, h in checked.items()}
        self.stats = tuple(
            BackendStats(
                node=b.node,
                address=b.address,
                port=b.port,
                weight=b.weight,
                state=b.state,
                health=health.get(b.node, "unknown"),
                active_connections=(
                    self._counters[b.node].connections if b.node in self._counters else None
                ),
                # HAProxy sends nothing to a server its checks found down
                in_rotation=b.node in live and health.get(b.node) != "down",
            )
            for b in backends
        )
