"""The agent's configuration: a JSON file, validated before anything runs.

Default timings (etcd tuned to ``--heartbeat-interval 20 --election-timeout 200`` so that it
grants 1 s leases and elects a new leader in 0.2-0.4 s; roles/etcd/defaults):

* ``lease_ttl = 1.0`` — a crashed holder's key vanishes 1.0-1.5 s after its last renewal
  (etcd's lessor checks expiry every ~0.5 s).
* ``renew_interval = 0.2`` — five renewals per TTL, so two or three lost ones are tolerated
  before fencing (rule: renew_interval * 3 <= lease_ttl).
* ``holding_renew_interval = 0.1`` — while the node holds a group it renews twice as often
  (rule: <= renew_interval). Why: when the etcd leader dies, no lease can be renewed until
  the others elect a new one, 0.2-0.4 s after its last heartbeat; the holder fences 0.6 s
  after its last renewal, which was up to one interval (plus a loop tick) before the leader
  died. At 0.2 s that left 0-0.05 s for the first renewal at the new leader, and CI saw a
  healthy holder fence on an etcd leader kill; at 0.1 s it leaves 0.1-0.15 s. Only holders
  pay the extra renewals, so etcd's load grows with the groups, not with the nodes.
* ``renew_timeout = 0.25`` — one renewal attempt (over all endpoints) never blocks longer.
* ``fence_margin = 0.4`` — a holder that cannot renew stops its resources 0.6 s after its last
  successful renewal (measured from when that renewal was *sent*, which is never later than
  when etcd restarted the countdown). A renewal that starts just before that deadline can
  block it by at most ``renew_timeout`` (rule: fence_margin > renew_timeout), so fencing starts
  no later than 0.85 s, and the 0.15 s left is for dropping the VIP — all before etcd can
  expire the lease (>= 1.0 s) and let another node in.
* ``loop_interval = 0.1`` — a standby notices a free group within 0.1 s (at once when it
  reads a watched copy of the state: a change wakes it, agent/store/watch.py).
* ``idle_lease_ttl = 4 x lease_ttl`` — a node that holds nothing registers on a lease of
  its own, renewed every third of it and without the quorum check (no deadline is measured
  from it): with hundreds of nodes, etcd's renewals grow with the groups, not the nodes
  (Kubernetes' node leases: 40 s, renewed every 10 s). It takes a ``lease_ttl`` lease before
  it takes a group or pre-starts for a move, and goes back to idle ``fast_lease_linger``
  (5 x lease_ttl) after it let go of its last group. The price: a crashed idle node shows
  online in ``status`` up to ``idle_lease_ttl`` after it died. ``idle_lease_ttl =
  lease_ttl`` keeps every node on fast leases.

``renew_timeout`` and ``fence_margin`` scale with ``lease_ttl`` when a config leaves them out
(``SCALED_TIMINGS``), and a VIP without a ``lifetime`` gets the fencing deadline, rounded up.

Expected failover after a holder crash: lease remainder (0.8-1.0 s) + lessor tick (0-0.5 s)
+ poll (0-0.1 s) + start of the resources, i.e. ~1.2-1.3 s median. The price of the short TTL
is that an etcd outage longer than ~0.4-0.6 s fences the holder; an etcd leader election
(0.2-0.4 s with the role's settings) does not.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from clusterctl.agent.store.etcd import EtcdCredentials, check_endpoint
from clusterctl.agent.tls import TlsFiles
from clusterctl.agent.vmspec import validate_params as validate_vm_params

# Names of nodes, clusters, groups, resources and etcd users: checked with fullmatch (``$``
# alone would accept a trailing newline). The one definition; the API uses it too.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def is_name(value: object) -> bool:
    return isinstance(value, str) and NAME_RE.fullmatch(value) is not None


FENCING_MODES = ("none", "required")
FENCE_AGENT_RE = re.compile(r"fence_[a-z0-9_]{1,40}")  # an agent in /usr/sbin, by name
FENCE_OPTION_RE = re.compile(r"[a-z][a-z0-9_]{0,40}")

# Resource types the agent knows, with their required parameters and default flags.
RESOURCE_TYPES: dict[str, dict[str, Any]] = {
    "vip": {"required": ("address", "prefix", "interface"), "exclusive": True},
    "systemd": {"required": ("unit",), "exclusive": False},
    # a front end on the VIP: must never run on two nodes (it answers for the VIP)
    "lb": {"required": ("address", "port", "backend_port"), "exclusive": True},
    # a virtual machine: its disk is written by one running copy only; a planned move
    # migrates it live (the target prepares an incoming qemu, the holder sends its memory)
    "vm": {"required": ("disk",), "exclusive": True, "migratable": True},
}


class ConfigError(ValueError):
    """A configuration rule is broken. ``rule`` names it; ``str()`` is one line for humans."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail


@dataclass(frozen=True)
class ResourceSpec:
    """One resource of a group. ``params`` are type-specific (vip: address, prefix,
    interface[, announce_interface]; systemd: unit). ``exclusive`` resources (a VIP, a
    database) must be stopped on one node before they start on another; ``prestart_safe`` ones
    (a stateless web server) may run on the target of a planned move before the holder lets
    go (make-before-break)."""

    name: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    exclusive: bool | None = None  # None: the type's default
    prestart_safe: bool = False
    monitor_interval: float | None = None  # None: the group's
    timeout: float = 10.0  # seconds allowed for one start/stop/monitor command

    @property
    def is_exclusive(self) -> bool:
        if self.exclusive is not None:
            return self.exclusive
        return bool(RESOURCE_TYPES.get(self.type, {}).get("exclusive", False))

    @property
    def is_migratable(self) -> bool:
        """A planned move hands it over running (live migration) instead of stop + start;
        ``live_migration: false`` turns that off for one resource."""
        migratable = bool(RESOURCE_TYPES.get(self.type, {}).get("migratable", False))
        return migratable and bool(self.params.get("live_migration", True))


@dataclass(frozen=True)
class GroupSpec:
    """A resource group: resources in start order plus placement rules.

    ``bans``: nodes that never acquire it. ``preferred``: while any preferred node is an
    eligible member, other nodes do not acquire a free group. Stickiness is unconditional: a
    running group is never taken from its holder by a node that (re)joins.
    ``restart_grace``: how long a failed resource may take to restart in place (capped by its
    ``timeout``) before the group moves to another node.
    """

    name: str
    resources: tuple[ResourceSpec, ...]
    migration_threshold: int = 3
    bans: tuple[str, ...] = ()
    preferred: tuple[str, ...] = ()
    monitor_interval: float = 1.0
    restart_grace: float = 1.0
    # "required": the group writes shared data, so it starts on a new node only after its
    # previous owner was fenced or stopped it (agent/fencing.py); "none": self-fencing only
    fencing: str = "none"

    @property
    def needs_fencing(self) -> bool:
        return self.fencing == "required"

    def to_json(self) -> str:
        return json.dumps(group_to_dict(self), sort_keys=True)


@dataclass(frozen=True)
class AgentConfig:
    """Everything one agent needs. See the module docstring for the timing defaults."""

    node: str
    etcd_endpoints: tuple[str, ...]
    cluster: str = "demo"
    # this node runs an etcd member, the first of etcd_endpoints: after a (re)start the agent
    # registers only once that member has rejoined (up to member_rejoin_wait seconds), so a
    # node that says it is online also gives its vote back to etcd's quorum
    etcd_member: bool = False
    member_rejoin_wait: float = 60.0
    # seconds a transition stays in the cluster's history (agent/history.py)
    history_retention: float = 7 * 24 * 3600.0
    # SCHED_RR priority of the loop's thread (renewals, fencing); 0 leaves it to the
    # ordinary scheduler. The agent falls back to that when the host refuses real time.
    realtime_priority: int = 0
    # hand etcd's leadership away once this node has held a group and led etcd for a while
    # (agent/etcd_leader.py): a crash of a holder that leads costs an election plus the new
    # leader's re-armed leases (bench failover: node crashes of 1.9-2.1 s instead of ~1.1 s)
    move_etcd_leadership: bool = True
    address: str = ""
    lease_ttl: float = 1.0
    renew_interval: float = 0.2
    holding_renew_interval: float = 0.1
    renew_timeout: float = 0.25
    fence_margin: float = 0.4
    loop_interval: float = 0.1
    request_timeout: float = 0.5
    idle_lease_ttl: float = 0.0  # 0: 4 x lease_ttl (the module docstring says why)
    # read the cluster's state from a watched copy (agent/store/watch.py), not each step
    watch_state: bool = True
    standby: bool = False
    groups: tuple[GroupSpec, ...] = ()
    # this node as an LB backend ({"address", "port", "weight"}): registered in
    # ``backends/<node>`` when that key is absent (an operator's weight or drain persists)
    backend: dict[str, Any] | None = None
    api_port: int = 7480  # the REST API and /metrics (docs/agent-api.md); 0 disables it
    api_bind: str = "0.0.0.0"
    api_token_file: str = "/etc/clusterctl/api-token"
    # TLS (all three or none): the cluster's CA and this node's certificate and key, used
    # for https etcd endpoints, to serve the API and to call the other agents
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # etcd RBAC: the user the agent authenticates as, and the file with its password
    etcd_user: str = ""
    etcd_password_file: str = ""
    # fence device of each node (agent/fencing.py): {node: {"agent": "fence_ipmilan",
    # "options": {name: value}, "secrets_file": path}}; fence_timeout bounds one fence
    fence_devices: dict[str, Any] = field(default_factory=dict)
    fence_timeout: float = 60.0

    @property
    def idle_ttl(self) -> float:
        """The TTL of an idle node's lease."""
        return self.idle_lease_ttl or 4 * self.lease_ttl

    @property
    def idle_renew_interval(self) -> float:
        return self.idle_ttl / 3

    @property
    def fast_lease_linger(self) -> float:
        """How long a node keeps its fast lease after it let go of its last group (a move
        back, a restart of the group elsewhere: no new grant for each)."""
        return 5 * self.lease_ttl

    @property
    def api_enabled(self) -> bool:
        return self.api_port != 0

    @property
    def tls(self) -> TlsFiles | None:
        if not self.tls_ca_file:
            return None
        return TlsFiles(self.tls_ca_file, self.tls_cert_file, self.tls_key_file)

    @property
    def etcd_credentials(self) -> EtcdCredentials | None:
        if not self.etcd_user:
            return None
        return EtcdCredentials(self.etcd_user, self.etcd_password_file)

    def validate(self) -> AgentConfig:
        """Raise ``ConfigError`` naming the first broken rule; return self if all hold."""
        for label, value in (("node", self.node), ("cluster", self.cluster)):
            if not is_name(value):
                raise ConfigError(f"{label} name", f"{value!r} must match {NAME_RE.pattern}")
        if not self.etcd_endpoints:
            raise ConfigError("etcd_endpoints", "at least one endpoint is needed")
        for url in self.etcd_endpoints:
            try:
                check_endpoint(str(url))
            except ValueError as exc:
                raise ConfigError("etcd_endpoints", str(exc)) from None
        for name in (
            "lease_ttl",
            "renew_interval",
            "holding_renew_interval",
            "renew_timeout",
            "fence_margin",
            "loop_interval",
            "request_timeout",
            "member_rejoin_wait",
            "history_retention",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError("positive numbers", f"{name} must be > 0, got {value!r}")
        if not isinstance(self.move_etcd_leadership, bool):
            raise ConfigError("move_etcd_leadership", "must be true or false")
        if not isinstance(self.watch_state, bool):
            raise ConfigError("watch_state", "must be true or false")
        idle = self.idle_lease_ttl
        if isinstance(idle, bool) or not isinstance(idle, int | float) or idle < 0:
            raise ConfigError("idle_lease_ttl >= 0", f"{idle!r} (0: 4 x lease_ttl)")
        if 0 < idle < self.lease_ttl:
            raise ConfigError(
                "idle_lease_ttl >= lease_ttl",
                f"{idle} < {self.lease_ttl}: an idle node would renew more than a holder",
            )
        rt = self.realtime_priority
        if isinstance(rt, bool) or not isinstance(rt, int) or not 0 <= rt <= 99:
            raise ConfigError("realtime_priority 0..99", f"{rt!r} (0: no real time)")
        if self.renew_interval * 3 > self.lease_ttl:
            raise ConfigError(
                "renew_interval * 3 <= lease_ttl",
                f"{self.renew_interval} * 3 > {self.lease_ttl}: too few renewals per lease",
            )
        if self.holding_renew_interval > self.renew_interval:
            raise ConfigError(
                "holding_renew_interval <= renew_interval",
                f"{self.holding_renew_interval} > {self.renew_interval}: a holder would renew "
                "less often than a standby",
            )
        if self.fence_margin <= self.renew_timeout:
            raise ConfigError(
                "fence_margin > renew_timeout",
                f"{self.fence_margin} <= {self.renew_timeout}: a hung renewal could delay "
                "fencing past the lease's expiry",
            )
        if self.fence_margin >= self.lease_ttl:
            raise ConfigError(
                "fence_margin < lease_ttl",
                f"{self.fence_margin} >= {self.lease_ttl}: the holder would fence at once",
            )
        if self.loop_interval > self.renew_interval:
            raise ConfigError(
                "loop_interval <= renew_interval",
                f"{self.loop_interval} > {self.renew_interval}: renewals would be late",
            )
        self._validate_api()
        self._validate_security()
        self._validate_fencing()
        if self.backend is not None:
            from clusterctl.agent.lb.model import Backend

            if not isinstance(self.backend, dict):
                raise ConfigError("backend", "an object {address, port, weight} or null")
            try:
                Backend(
                    self.node,
                    str(self.backend.get("address", "")),
                    self.backend.get("port", 0),
                    self.backend.get("weight", 1),
                ).validate()
            except ConfigError as exc:
                raise ConfigError(f"backend: {exc.rule}", exc.detail) from None
        seen: set[str] = set()
        for group in self.groups:
            if group.name in seen:
                raise ConfigError("unique group names", f"group {group.name!r} appears twice")
            seen.add(group.name)
            validate_group(group)
            for res in group.resources:
                lifetime = res.params.get("lifetime") if res.type == "vip" else None
                if lifetime is not None and lifetime < self.lease_ttl - self.fence_margin:
                    raise ConfigError(
                        "vip lifetime >= lease_ttl - fence_margin",
                        f"group {group.name!r}: {lifetime} s would let the kernel drop the VIP "
                        "before the agent itself would fence",
                    )
        return self

    def _validate_fencing(self) -> None:
        if not isinstance(self.fence_devices, dict):
            raise ConfigError("fence_devices", "an object {node: device}")
        t = self.fence_timeout
        if isinstance(t, bool) or not isinstance(t, int | float) or t <= 0:
            raise ConfigError("positive numbers", f"fence_timeout must be > 0, got {t!r}")
        for node, device in self.fence_devices.items():
            where = f"fence_devices[{node!r}]"
            if not is_name(node):
                raise ConfigError("fence device node names", f"{where}: not a node name")
            if not isinstance(device, dict) or set(device) - {"agent", "options", "secrets_file"}:
                raise ConfigError(
                    "fence device syntax", f"{where}: an object {{agent, options, secrets_file}}"
                )
            if not isinstance(device.get("agent"), str) or not FENCE_AGENT_RE.fullmatch(
                device["agent"]
            ):
                raise ConfigError(
                    "fence agent names", f"{where}: agent must match {FENCE_AGENT_RE.pattern}"
                )
            options = device.get("options") or {}
            if not isinstance(options, dict):
                raise ConfigError("fence device syntax", f"{where}: options must be an object")
            for key, value in options.items():
                # one option per stdin line: a newline would smuggle in another option
                if not FENCE_OPTION_RE.fullmatch(str(key)) or any(
                    c in str(value) for c in "\n\r\0"
                ):
                    raise ConfigError("fence options", f"{where}: {key!r} = {value!r:.40}")
                if key in ("action", "password", "passwd"):
                    raise ConfigError(
                        "fence options",
                        f"{where}: {key!r} may not be set here (the agent sets the action; "
                        "passwords go in secrets_file)",
                    )
            secrets = device.get("secrets_file", "")
            if not isinstance(secrets, str) or (secrets and not secrets.startswith("/")):
                raise ConfigError("fence device syntax", f"{where}: secrets_file: absolute path")
        for group in self.groups:
            if group.needs_fencing and not self.fence_devices:
                raise ConfigError(
                    "fencing needs devices",
                    f"group {group.name!r} has fencing: required but no fence_devices are set",
                )

    def _validate_api(self) -> None:
        port = self.api_port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError("api_port 0..65535", f"{port!r} (0 disables the API)")
        try:
            if not isinstance(self.api_bind, str):
                raise ValueError
            ipaddress.ip_address(self.api_bind)
        except ValueError:
            raise ConfigError(
                "api_bind is an IP address", f"{self.api_bind!r} (e.g. 0.0.0.0)"
            ) from None
        if self.api_enabled and (
            not isinstance(self.api_token_file, str) or not self.api_token_file.strip()
        ):
            raise ConfigError("api_token_file", "a path is needed while api_port != 0")

    def _validate_security(self) -> None:
        tls_files = (self.tls_ca_file, self.tls_cert_file, self.tls_key_file)
        if not all(isinstance(f, str) for f in tls_files):
            raise ConfigError("tls files are paths", "tls_ca_file, tls_cert_file, tls_key_file")
        if any(tls_files) and not all(tls_files):
            raise ConfigError(
                "tls files all or none", "set tls_ca_file, tls_cert_file and tls_key_file"
            )
        schemes = {str(url).split(":", 1)[0] for url in self.etcd_endpoints}
        if len(schemes) > 1:
            raise ConfigError("one scheme", "etcd_endpoints mix http and https")
        if "https" in schemes and not any(tls_files):
            raise ConfigError("https needs tls files", "set tls_ca_file, tls_cert_file, ...")
        if not isinstance(self.etcd_user, str) or not isinstance(self.etcd_password_file, str):
            raise ConfigError("etcd user", "etcd_user and etcd_password_file are strings")
        if bool(self.etcd_user) != bool(self.etcd_password_file):
            raise ConfigError("etcd user", "etcd_user and etcd_password_file go together")
        if self.etcd_user and not is_name(self.etcd_user):
            raise ConfigError("etcd user", f"{self.etcd_user!r} must match {NAME_RE.pattern}")


def validate_group(group: GroupSpec) -> None:
    """Raise ``ConfigError`` if ``group`` breaks a rule."""
    where = f"group {group.name!r}"
    if not is_name(group.name):
        raise ConfigError("group name", f"{group.name!r} must match {NAME_RE.pattern}")
    if not group.resources:
        raise ConfigError("group resources non-empty", f"{where} has no resources")
    if isinstance(group.migration_threshold, bool) or not isinstance(
        group.migration_threshold, int
    ):
        raise ConfigError("migration_threshold >= 1", f"{where}: not an integer")
    if group.migration_threshold < 1:
        raise ConfigError("migration_threshold >= 1", f"{where}: {group.migration_threshold}")
    if group.monitor_interval <= 0:
        raise ConfigError("positive numbers", f"{where}: monitor_interval must be > 0")
    if group.restart_grace <= 0:
        raise ConfigError("positive numbers", f"{where}: restart_grace must be > 0")
    if group.fencing not in FENCING_MODES:
        known = ", ".join(FENCING_MODES)
        raise ConfigError("fencing modes", f"{where}: fencing {group.fencing!r} (known: {known})")
    if not group.needs_fencing and any(r.type == "vm" for r in group.resources):
        raise ConfigError(
            "virtual machines are fenced",
            f"{where}: a VM's disk is shared storage: the group needs fencing: required",
        )
    if group.needs_fencing and any(r.prestart_safe for r in group.resources):
        raise ConfigError(
            "fencing groups pre-start nothing",
            f"{where}: a resource on shared storage must not run on the move target before "
            "the holder stopped it (prestart_safe)",
        )
    names: set[str] = set()
    for res in group.resources:
        rwhere = f"{where} resource {res.name!r}"
        if res.type not in RESOURCE_TYPES:
            known = ", ".join(sorted(RESOURCE_TYPES))
            raise ConfigError("known resource types", f"{rwhere}: {res.type!r} (known: {known})")
        if not is_name(res.name) or res.name in names:
            raise ConfigError("unique resource names", f"{rwhere}: empty, invalid or repeated")
        names.add(res.name)
        missing = [p for p in RESOURCE_TYPES[res.type]["required"] if p not in res.params]
        if missing:
            raise ConfigError("resource parameters", f"{rwhere}: missing {', '.join(missing)}")
        if res.is_exclusive and res.prestart_safe:
            raise ConfigError(
                "exclusive resources are not prestart_safe",
                f"{rwhere}: an exclusive resource must stop before it starts elsewhere",
            )
        if res.timeout <= 0 or (res.monitor_interval is not None and res.monitor_interval <= 0):
            raise ConfigError("positive numbers", f"{rwhere}: timeout/monitor_interval")
        if res.type == "vip":
            _validate_vip(rwhere, res.params)
        if res.type == "vm":
            try:
                validate_vm_params(res.params)
            except ValueError as exc:
                raise ConfigError("vm parameters", f"{rwhere}: {exc}") from None
        if res.type == "lb":
            from clusterctl.agent.lb.model import LbSpec  # lb.model imports this module

            try:
                LbSpec.from_params(res.params)
            except ConfigError as exc:
                raise ConfigError(exc.rule, f"{rwhere}: {exc.detail}") from None


def _validate_vip(where: str, params: dict[str, Any]) -> None:
    try:
        ipaddress.IPv4Address(params["address"])
    except ValueError:
        raise ConfigError("vip address", f"{where}: {params['address']!r} is not IPv4") from None
    prefix = params["prefix"]
    if isinstance(prefix, bool) or not isinstance(prefix, int) or not 0 < prefix <= 32:
        raise ConfigError("vip prefix", f"{where}: {prefix!r} is not 1..32")
    lifetime = params.get("lifetime")
    if lifetime is not None and (
        isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime < 1
    ):
        raise ConfigError("vip lifetime", f"{where}: {lifetime!r} is not a whole number >= 1")


# -- JSON ----------------------------------------------------------------------------------


def group_to_dict(group: GroupSpec) -> dict[str, Any]:
    return {
        "name": group.name,
        "migration_threshold": group.migration_threshold,
        "bans": list(group.bans),
        "preferred": list(group.preferred),
        "monitor_interval": group.monitor_interval,
        "restart_grace": group.restart_grace,
        "fencing": group.fencing,
        "resources": [
            {
                "name": r.name,
                "type": r.type,
                **r.params,
                **({} if r.exclusive is None else {"exclusive": r.exclusive}),
                "prestart_safe": r.prestart_safe,
                **({} if r.monitor_interval is None else {"monitor_interval": r.monitor_interval}),
                "timeout": r.timeout,
            }
            for r in group.resources
        ],
    }


_RESOURCE_FIELDS = {"name", "type", "exclusive", "prestart_safe", "monitor_interval", "timeout"}


def _typed(data: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    """``data[key]`` if it has the JSON type ``kind`` (a bool is not a number), else
    ``ConfigError``; ``default`` when absent."""
    if key not in data:
        return default
    value = data[key]
    is_bool = isinstance(value, bool)
    wants_bool = kind is bool or (isinstance(kind, tuple) and bool in kind)
    if not isinstance(value, kind) or (is_bool and not wants_bool):
        raise ConfigError("group syntax", f"{key} has the wrong type: {value!r:.80}")
    return value


def _names(data: dict[str, Any], key: str) -> tuple[str, ...]:
    values = _typed(data, key, list, [])
    if not all(isinstance(v, str) for v in values):
        raise ConfigError("group syntax", f"{key} must be a list of node names")
    return tuple(values)


def group_from_dict(data: Any) -> GroupSpec:
    """Build a ``GroupSpec`` from parsed JSON (not validated: call ``validate_group``)."""
    if not isinstance(data, dict):
        raise ConfigError("group syntax", f"a group must be an object, got {data!r:.80}")
    resources = []
    for raw in _typed(data, "resources", list, []):
        if not isinstance(raw, dict):
            raise ConfigError("resource syntax", f"a resource must be an object, got {raw!r:.80}")
        kwargs = {k: raw[k] for k in _RESOURCE_FIELDS if k in raw}
        kwargs.setdefault("name", raw.get("type", ""))
        kwargs.setdefault("type", "")
        for key in ("name", "type"):
            if not isinstance(kwargs[key], str):
                raise ConfigError("resource syntax", f"resource {key} must be a string")
        params = {k: v for k, v in raw.items() if k not in _RESOURCE_FIELDS}
        resources.append(ResourceSpec(params=params, **kwargs))
    name = _typed(data, "name", str, "")
    return GroupSpec(
        name=name,
        resources=tuple(resources),
        migration_threshold=_typed(data, "migration_threshold", int, 3),
        bans=_names(data, "bans"),
        preferred=_names(data, "preferred"),
        monitor_interval=float(_typed(data, "monitor_interval", (int, float), 1.0)),
        restart_grace=float(_typed(data, "restart_grace", (int, float), 1.0)),
        fencing=_typed(data, "fencing", str, "none"),
    )


def config_from_dict(data: Any) -> AgentConfig:
    """Build and validate an ``AgentConfig`` from parsed JSON."""
    if not isinstance(data, dict):
        raise ConfigError("config syntax", "the top level must be a JSON object")
    known = {f.name for f in fields(AgentConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError("known settings", f"unknown setting(s): {', '.join(unknown)}")
    if "node" not in data or "etcd_endpoints" not in data:
        raise ConfigError("required settings", "node and etcd_endpoints are required")
    kwargs = dict(data)
    _scale_timings(kwargs)
    endpoints = kwargs["etcd_endpoints"]
    if isinstance(endpoints, str) or not isinstance(endpoints, list):
        raise ConfigError("etcd_endpoints", "must be a list of URLs")
    kwargs["etcd_endpoints"] = tuple(endpoints)
    groups = data.get("groups") or []
    if not isinstance(groups, list):
        raise ConfigError("groups", "must be a list of group objects")
    kwargs["groups"] = tuple(_with_vip_lifetimes(group_from_dict(g), kwargs) for g in groups)
    return AgentConfig(**kwargs).validate()


# Timings that scale with the lease when the config does not set them (the one place this
# rule lives: the agent role passes lease_ttl alone, `clusterctl up --lease-ttl` sets it).
SCALED_TIMINGS = {"renew_timeout": 0.25, "fence_margin": 0.4}


def _scale_timings(kwargs: dict[str, Any]) -> None:
    ttl = kwargs.get("lease_ttl", AgentConfig.lease_ttl)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        return  # validate() names the broken rule
    for name, factor in SCALED_TIMINGS.items():
        kwargs.setdefault(name, round(factor * ttl, 6))


def _with_vip_lifetimes(group: GroupSpec, kwargs: dict[str, Any]) -> GroupSpec:
    """A VIP without a ``lifetime`` gets the shortest safe one: the fencing deadline
    (lease_ttl - fence_margin), rounded up to the kernel's whole seconds."""
    ttl, margin = kwargs.get("lease_ttl", AgentConfig.lease_ttl), kwargs.get("fence_margin")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (ttl, margin)):
        return group
    lifetime = max(1, math.ceil(round(ttl - margin, 6)))
    resources = tuple(
        replace(r, params={**r.params, "lifetime": lifetime})
        if r.type == "vip" and "lifetime" not in r.params
        else r
        for r in group.resources
    )
    return replace(group, resources=resources)


def load_config(path: str | Path) -> AgentConfig:
    """Read, parse and validate the JSON config at ``path``. Raises ``ConfigError``."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError("config file readable", f"{path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("config syntax", f"{path}: {exc}") from None
    return config_from_dict(data)
