"""The load balancer as a resource: a front end on the group's VIP over the backends.

Backends live in etcd (``backends/<node>``: address, port, weight, state); the agent hands
them over every loop step (``set_backends``). While the resource runs, a checker thread
health-checks them (nft engine; HAProxy checks its servers itself), converges the engine at
once when the live set changes, and keeps per-backend statistics (health, active
connections) for the API. Nothing here blocks the HA loop for longer than one engine call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from clusterctl.agent.config import ResourceSpec
from clusterctl.agent.lb.command import InputRunner, LbError, SubprocessInputRunner
from clusterctl.agent.lb.haproxy import HaproxyEngine, stat_health
from clusterctl.agent.lb.health import CheckFn, HealthTracker, check_backends, http_check
from clusterctl.agent.lb.health import live_backends as healthy_live_backends
from clusterctl.agent.lb.model import Backend, LbSpec
from clusterctl.agent.lb.nft import NftEngine
from clusterctl.agent.resources.base import Resource, ResourceError
from clusterctl.agent.resources.runner import CommandRunner

STATS_INTERVAL = 1.0  # seconds between active-connection counts (conntrack / HAProxy stats)


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
        input_runner: InputRunner | None = None,
        check: CheckFn = http_check,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(spec, runner)
        self.lb = LbSpec.from_params(spec.params)
        self.input_runner = input_runner or SubprocessInputRunner()
        self.check = check
        self.clock = clock
        self.nft = self.lb.engine == "nft"
        self.engine: NftEngine | HaproxyEngine = (
            NftEngine(self.input_runner) if self.nft else HaproxyEngine(self.input_runner)
        )
        # A backend that appears while we run must pass `rise` checks before it gets traffic
        # (scale out without failed requests); those present at start are seeded instead.
        self.tracker = HealthTracker.for_spec(self.lb, initially_healthy=False)
        self._lock = threading.Lock()  # guards the backends, the tracker and engine calls
        self._backends: tuple[Backend, ...] = ()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._counts: dict[str, int | None] = {}
        self._haproxy_health: dict[str, str] = {}  # HAProxy's own check results, by node
        self._counted_at = float("-inf")
        self.last_error = ""
        self.stats: tuple[BackendStats, ...] = ()  # replaced whole, read without locking

    # -- inputs ------------------------------------------------------------------------------

    def set_backends(self, backends: Iterable[Backend]) -> None:
        """The registered backends (from etcd), as of this loop step."""
        ordered = tuple(sorted(backends, key=lambda b: b.node))
        with self._lock:
            changed = ordered != self._backends
            self._backends = ordered
            self.tracker.retain(b.node for b in ordered)
        if changed and self.running():
            self._converge()

    def live(self) -> tuple[Backend, ...]:
        """Backends that get new connections now (nft: active, weight > 0, healthy)."""
        if not self.nft:
            return tuple(b for b in self._backends if b.state == "active" and b.weight > 0)
        return healthy_live_backends(self._backends, self.tracker.snapshot(self._nodes()))

    def _nodes(self) -> list[str]:
        return [b.node for b in self._backends]

    # -- Resource ----------------------------------------------------------------------------

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float) -> None:
        if self.nft:
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
            self._stop.clear()
            self._thread = threading.Thread(target=self._checker, name="lb-checker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(timeout, 0.1))
            self._thread = None
        try:
            if self.nft:
                assert isinstance(self.engine, NftEngine)
                self.engine.remove(timeout)
            else:
                assert isinstance(self.engine, HaproxyEngine)
                self.engine.stop(timeout)
        except LbError as exc:
            raise ResourceError(str(exc)) from None

    def monitor(self, timeout: float) -> bool:
        if self.running():  # not before start: the start-up cleanup only looks
            self._converge()
        if self.nft:
            assert isinstance(self.engine, NftEngine)
            return self.engine.current(timeout)
        return self._run(["systemctl", "is-active", "--quiet", "haproxy"], timeout).ok

    def found_running(self, timeout: float) -> bool:
        """Whether this node has the front end in place (for the agent's start-up cleanup)."""
        if self.nft:
            assert isinstance(self.engine, NftEngine)
            return self.engine.current(timeout)
        return self._run(["systemctl", "is-active", "--quiet", "haproxy"], timeout).ok

    # -- work --------------------------------------------------------------------------------

    def _converge(self, raise_errors: bool = False) -> None:
        with self._lock:
            try:
                if self.nft:
                    assert isinstance(self.engine, NftEngine)
                    self.engine.apply(self.lb, self.live())
                else:
                    assert isinstance(self.engine, HaproxyEngine)
                    self.engine.apply(self.lb, self._backends)
                self.last_error = ""
            except LbError as exc:
                self.last_error = str(exc)
                if raise_errors:
                    raise ResourceError(str(exc)) from None

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

    def _checker(self) -> None:
        while not self._stop.is_set():
            try:
                if self.nft:
                    self._check_now(only_due=True)
                self._converge()
                self._publish()
            except Exception as exc:  # the checker must outlive any single bad round
                self.last_error = f"checker: {exc}"
            self._stop.wait(min(self.lb.inter, 0.25))

    def _publish(self) -> None:
        now = self.clock()
        backends = self._backends
        if now - self._counted_at >= STATS_INTERVAL:
            counts: dict[str, int | None] = {}
            if self.nft:
                assert isinstance(self.engine, NftEngine)
                for b in backends:
                    try:
                        counts[b.node] = self.engine.active_connections(b, self.lb, timeout=1.0)
                    except (LbError, OSError):
                        counts[b.node] = None
            else:
                # One `show stat` gives every server's sessions and HAProxy's own check result
                # (health used to be "unknown" with this engine: nothing read HAProxy's view).
                assert isinstance(self.engine, HaproxyEngine)
                try:
                    servers = self.engine.server_stats()
                except (LbError, OSError):
                    servers = None
                for b in backends:
                    stat = servers.get(b.node) if servers is not None else None
                    counts[b.node] = None if servers is None else (stat.sessions if stat else 0)
                self._haproxy_health = {
                    node: stat_health(stat.status) for node, stat in (servers or {}).items()
                }
            self._counts = counts
            self._counted_at = now
        live = {b.node for b in self.live()}
        if self.nft:
            checked = self.tracker.snapshot(self._nodes())
            health = {n: "up" if h.healthy else "down" for n, h in checked.items()}
        else:
            health = self._haproxy_health
        self.stats = tuple(
            BackendStats(
                node=b.node,
                address=b.address,
                port=b.port,
                weight=b.weight,
                state=b.state,
                health=health.get(b.node, "unknown"),
                active_connections=self._counts.get(b.node),
                # HAProxy sends nothing to a server its checks found down
                in_rotation=b.node in live and health.get(b.node) != "down",
            )
            for b in backends
        )
