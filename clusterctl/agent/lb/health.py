"""Backend health: a pure rise/fall state machine, the HTTP check, and the live set.

``HealthTracker`` never does I/O and never reads a clock: callers pass results and ``now``,
so the HA loop's fake clock drives it in tests. The checks themselves block (one TCP connect
plus one request each); run ``check_backends`` off the HA loop's thread, because that loop
must renew its lease every 0.2 s and a dead backend can take ``check_timeout`` to fail.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from clusterctl.agent.lb.model import Backend, BackendHealth, LbSpec

CheckFn = Callable[[str, int, str, int, float], bool]


class HealthTracker:
    """Per-backend health with HAProxy's ``inter``/``rise``/``fall`` meaning.

    A backend not seen before starts ``initially_healthy`` (HAProxy starts servers up, so a
    new LB holder serves at once instead of rejecting everything for ``rise * inter``; pass
    False to require ``rise`` good checks first). ``due`` says which backends need a check
    (never checked, or last checked ``inter`` s ago or more).
    """

    def __init__(
        self, rise: int, fall: int, inter: float = 1.0, initially_healthy: bool = True
    ) -> None:
        if rise < 1 or fall < 1 or inter <= 0:
            raise ValueError("rise and fall must be >= 1 and inter > 0")
        self.rise = rise
        self.fall = fall
        self.inter = inter
        self.initially_healthy = initially_healthy
        self._states: dict[str, BackendHealth] = {}
        self._checked_at: dict[str, float] = {}

    @classmethod
    def for_spec(cls, spec: LbSpec, initially_healthy: bool = True) -> HealthTracker:
        return cls(spec.rise, spec.fall, spec.inter, initially_healthy)

    def state(self, node: str) -> BackendHealth:
        """The current state of ``node`` (the initial one if it has no result yet)."""
        return self._states.get(node, BackendHealth(self.initially_healthy))

    def record(self, node: str, ok: bool, now: float | None = None) -> BackendHealth:
        """Apply one check result; return the new state. ``now`` marks the check time."""
        new = self.state(node).after(ok, self.rise, self.fall)
        self._states[node] = new
        if now is not None:
            self._checked_at[node] = now
        return new

    def seed(self, node: str, ok: bool, now: float | None = None) -> BackendHealth:
        """Set ``node``'s state from one check, skipping rise/fall: for the backends present
        when a load balancer starts (a new holder must serve at once, but not send to a
        backend its first check already found dead)."""
        new = BackendHealth(ok, 1 if ok else 0, 0 if ok else 1)
        self._states[node] = new
        if now is not None:
            self._checked_at[node] = now
        return new

    def due(self, nodes: Iterable[str], now: float) -> list[str]:
        """Nodes of ``nodes`` to check at ``now``, in the given order."""
        return [
            n for n in nodes if n not in self._checked_at or now - self._checked_at[n] >= self.inter
        ]

    def retain(self, nodes: Iterable[str]) -> None:
        """Forget every node not in ``nodes`` (a backend that left must not come back with
        its old state if it is re-added later)."""
        keep = set(nodes)
        for table in (self._states, self._checked_at):
            for node in [n for n in table if n not in keep]:
                del table[node]

    def snapshot(self, nodes: Iterable[str] | None = None) -> dict[str, BackendHealth]:
        """States of ``nodes`` (default: every node with a result)."""
        names = list(self._states) if nodes is None else list(nodes)
        return {n: self.state(n) for n in names}


def http_check(address: str, port: int, path: str, expected_status: int, timeout: float) -> bool:
    """``GET path`` on ``address:port``: True iff it answers ``expected_status`` in time.

    http.client never consults proxy settings (urllib would, via ``*_proxy`` variables, and a
    proxy would check itself rather than the backend). Never raises.
    """
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close", "User-Agent": "clusterctl-lb"})
        response = conn.getresponse()
        response.read(65536)  # drain a little so the server is not reset mid-answer
        return response.status == expected_status
    except (OSError, http.client.HTTPException, ValueError):
        return False
    finally:
        conn.close()


def check_backends(
    backends: Sequence[Backend], spec: LbSpec, check: CheckFn = http_check, workers: int = 8
) -> dict[str, bool]:
    """Check ``backends`` concurrently; return ``{node: ok}``. Takes about one
    ``check_timeout`` per ``workers`` dead backends. Disabled backends are not checked."""
    targets = [b for b in backends if b.state != "disabled"]
    if not targets:
        return {}

    def one(b: Backend) -> bool:
        try:
            return check(
                b.address, b.port, spec.check_path, spec.expected_status, spec.check_timeout
            )
        except Exception:  # a buggy check must count as a failure, not kill the checker
            return False

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(targets)))) as pool:
        return dict(zip([b.node for b in targets], pool.map(one, targets), strict=True))


def live_backends(
    backends: Iterable[Backend], health: Mapping[str, BackendHealth]
) -> tuple[Backend, ...]:
    """Backends that may receive NEW connections: active, healthy and weight > 0, sorted by
    node (a stable order keeps the rendered ruleset stable). A backend missing from
    ``health`` is treated as unhealthy; draining ones are excluded (their established
    connections live on in conntrack / HAProxy, not in this set)."""
    live = [
        b
        for b in backends
        if b.state == "active" and b.weight > 0 and (h := health.get(b.node)) and h.healthy
    ]
    return tuple(sorted(live, key=lambda b: b.node))
