"""The load balancer's data: backends (as stored in etcd), their health, and the LB spec.

Everything here is immutable and validated by ``validate()``, which raises ``LbConfigError``
(a ``ConfigError``, hence a ``ValueError``) naming the first broken rule, like the agent's own
configuration does.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from clusterctl.agent.apiclient import MAX_BACKEND_WEIGHT  # the API's bound
from clusterctl.agent.config import ConfigError

# Same rule as the agent's node names: a backend is named after the node that serves it, and
# the name is reused verbatim as HAProxy's server name (which accepts these characters).
_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# A check path goes into an HTTP request line and into haproxy.cfg: no whitespace, no quotes,
# no control characters, so it can never inject a header or a config directive.
_PATH = re.compile(r"^/[\x21-\x7e]*$")

BACKEND_STATES = ("active", "draining", "disabled")
ENGINES = ("nft", "haproxy")
ALGORITHMS: dict[str, tuple[str, ...]] = {
    "nft": ("roundrobin", "weighted", "source"),
    "haproxy": ("roundrobin", "leastconn", "source"),
}
MODES = ("tcp", "http")


class LbConfigError(ConfigError):
    """An LB rule is broken. ``rule`` names it; ``str()`` is one line for humans."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_ipv4(rule: str, value: Any) -> None:
    try:
        if not isinstance(value, str):
            raise ValueError
        ipaddress.IPv4Address(value)
    except ValueError:
        raise LbConfigError(rule, f"{value!r} is not an IPv4 address") from None


def _check_port(rule: str, value: Any) -> None:
    if not _is_int(value) or not 1 <= value <= 65535:
        raise LbConfigError(rule, f"{value!r} is not a port 1..65535")


@dataclass(frozen=True)
class Backend:
    """One backend: the web server of node ``node`` at ``address:port``.

    ``weight`` 0..256 (0: no new connections, like HAProxy). ``state``: ``active`` receives new
    connections while healthy; ``draining`` keeps its established connections but gets no new
    ones; ``disabled`` gets nothing. The etcd value of ``backends/<node>`` is ``to_json()``.
    """

    node: str
    address: str
    port: int
    weight: int = 1
    state: str = "active"

    def validate(self) -> Backend:
        """Raise ``LbConfigError`` naming the first broken rule; return self if all hold."""
        if not isinstance(self.node, str) or not _NODE.match(self.node):
            raise LbConfigError("backend node name", f"{self.node!r} must match {_NODE.pattern}")
        _check_ipv4("backend address", self.address)
        _check_port("backend port", self.port)
        if not _is_int(self.weight) or not 0 <= self.weight <= MAX_BACKEND_WEIGHT:
            raise LbConfigError(
                f"backend weight 0..{MAX_BACKEND_WEIGHT}", f"{self.node}: {self.weight!r}"
            )
        if self.state not in BACKEND_STATES:
            known = ", ".join(BACKEND_STATES)
            raise LbConfigError(
                "known backend states", f"{self.node}: {self.state!r} (known: {known})"
            )
        return self

    def to_json(self) -> str:
        """The value stored at ``backends/<node>`` (the node is the key, not in the value)."""
        value = {"address": self.address, "port": self.port, "weight": self.weight}
        return json.dumps({**value, "state": self.state}, sort_keys=True)

    @classmethod
    def from_json(cls, node: str, text: str) -> Backend:
        """Parse and validate a ``backends/<node>`` value. ``weight`` defaults to 1 and
        ``state`` to ``active`` so that a node can register with just address and port."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise LbConfigError("backend syntax", f"{node}: {exc}") from None
        if not isinstance(data, dict):
            raise LbConfigError("backend syntax", f"{node}: a backend must be a JSON object")
        unknown = sorted(set(data) - {"address", "port", "weight", "state"})
        if unknown:
            raise LbConfigError("backend syntax", f"{node}: unknown key(s) {', '.join(unknown)}")
        if "address" not in data or "port" not in data:
            raise LbConfigError("backend syntax", f"{node}: address and port are required")
        return cls(
            node=node,
            address=data["address"],
            port=data["port"],
            weight=data.get("weight", 1),
            state=data.get("state", "active"),
        ).validate()


@dataclass(frozen=True)
class BackendHealth:
    """Health of one backend as the checker sees it. ``successes`` and ``failures`` count the
    latest run of consecutive results (one of them is always 0)."""

    healthy: bool
    successes: int = 0
    failures: int = 0

    def after(self, ok: bool, rise: int, fall: int) -> BackendHealth:
        """The state after one more check result (HAProxy's rise/fall, with consecutive runs:
        a backend turns healthy after ``rise`` successes in a row, unhealthy after ``fall``
        failures in a row; any other result just extends or restarts the run)."""
        if ok:
            successes = self.successes + 1
            return BackendHealth(self.healthy or successes >= rise, successes, 0)
        failures = self.failures + 1
        return BackendHealth(self.healthy and failures < fall, 0, failures)


@dataclass(frozen=True)
class LbSpec:
    """The load balancer: frontend ``address:port`` (the group's VIP) to backends.

    ``backend_port``: the port a node registers by default. ``engine``: ``nft`` (kernel L4,
    default) or ``haproxy`` (L7). ``algorithm``: see ``ALGORITHMS``. ``mode``: ``tcp`` or
    ``http`` (HAProxy only). Health checks: ``GET check_path`` must answer
    ``expected_status`` within ``check_timeout`` s, every ``inter`` s; ``rise`` successes in a
    row make a backend healthy, ``fall`` failures in a row unhealthy. A draining backend is
    removed when it has no active connection left, or after ``drain_timeout`` s.
    """

    address: str
    port: int
    backend_port: int
    engine: str = "nft"
    algorithm: str = "roundrobin"
    mode: str = "tcp"
    check_path: str = "/"
    expected_status: int = 200
    inter: float = 1.0
    rise: int = 2
    fall: int = 3
    drain_timeout: float = 30.0
    check_timeout: float = 1.0

    def validate(self) -> LbSpec:
        """Raise ``LbConfigError`` naming the first broken rule; return self if all hold."""
        _check_ipv4("lb address", self.address)
        _check_port("lb port", self.port)
        _check_port("lb backend_port", self.backend_port)
        if self.engine not in ENGINES:
            known = ", ".join(ENGINES)
            raise LbConfigError("known lb engines", f"{self.engine!r} (known: {known})")
        known_algorithms = ALGORITHMS[self.engine]
        if self.algorithm not in known_algorithms:
            raise LbConfigError(
                "known lb algorithms",
                f"{self.algorithm!r} for engine {self.engine} "
                f"(known: {', '.join(known_algorithms)})",
            )
        if self.mode not in MODES:
            raise LbConfigError("known lb modes", f"{self.mode!r} (known: {', '.join(MODES)})")
        if self.mode == "http" and self.engine != "haproxy":
            raise LbConfigError("mode http needs engine haproxy", "nft balances TCP (L4) only")
        if not isinstance(self.check_path, str) or not _PATH.match(self.check_path):
            raise LbConfigError(
                "lb check_path", f"{self.check_path!r} must start with / and have no spaces"
            )
        if not _is_int(self.expected_status) or not 100 <= self.expected_status <= 599:
            raise LbConfigError("lb expected_status 100..599", f"{self.expected_status!r}")
        for name in ("inter", "check_timeout"):
            value = getattr(self, name)
            if not _is_number(value) or value <= 0:
                raise LbConfigError("positive numbers", f"lb {name} must be > 0, got {value!r}")
        if not _is_number(self.drain_timeout) or self.drain_timeout < 0:
            raise LbConfigError("lb drain_timeout >= 0", f"{self.drain_timeout!r}")
        for name in ("rise", "fall"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise LbConfigError(f"lb {name} >= 1", f"{value!r}")
        return self

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> LbSpec:
        """Build and validate a spec from a resource's ``params`` (``ResourceSpec.params``).
        Unknown keys are an error: a typo must not silently fall back to a default."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise LbConfigError("known lb parameters", f"unknown: {', '.join(unknown)}")
        missing = [p for p in ("address", "port", "backend_port") if p not in params]
        if missing:
            raise LbConfigError("lb parameters", f"missing {', '.join(missing)}")
        return cls(**dict(params)).validate()


def drain_complete(active: int, started_at: float, now: float, timeout: float) -> bool:
    """Whether a draining backend may be removed: no active connection left, or the drain
    has lasted ``timeout`` seconds (a stuck long-lived connection must not block removal)."""
    return active <= 0 or now - started_at >= timeout


@dataclass(frozen=True)
class BackendCounters:
    """What an engine reports of one backend: its active connections (None: unknown) and,
    for an engine that checks its servers itself, its own check result (up, down, unknown)."""

    connections: int | None
    health: str | None = None
