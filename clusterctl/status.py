"""The cluster status data model, rendered as a table or as JSON."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime

from clusterctl.agent.history import HistoryEntry
from clusterctl.profiles import AGENT_PROFILES, DEFAULT_PROFILE
from clusterctl.slurm import SlurmStatus


@dataclass(frozen=True)
class NodeStatus:
    name: str
    address: str
    online: bool
    ssh: bool
    web: bool
    web_reply: str = ""
    etcd: bool = False
    standby: bool = False
    error: str = ""
    power: str = ""  # the machine as the provider sees it: running, stopped, ...; "" unknown


@dataclass(frozen=True)
class GroupStatus:
    name: str
    vip: str
    node: str
    state: str
    failcounts: dict[str, int] = field(default_factory=dict)
    bans: list[str] = field(default_factory=list)
    last_failover: HistoryEntry | None = None  # the latest takeover from another node
    fencing: dict | None = None  # {target, error} while the holder fences the old owner
    notes: dict[str, str] = field(default_factory=dict)  # resource -> its holder's word on it

    @property
    def state_text(self) -> str:
        """The state with its resources' notes: "started (demo-vm: running)"."""
        if not self.notes:
            return self.state
        return f"{self.state} ({', '.join(f'{k}: {v}' for k, v in self.notes.items())})"


@dataclass(frozen=True)
class BackendStatus:
    node: str
    address: str
    state: str
    weight: int
    health: str = "unknown"
    active_connections: int | None = None


@dataclass(frozen=True)
class ClusterStatus:
    cluster: str
    provider: str
    quorum: bool
    profile: str = DEFAULT_PROFILE
    lb_engine: str | None = None  # profile lb only
    lease_ttl: int | None = None  # profiles with the agent only (seconds)
    nodes: list[NodeStatus] = field(default_factory=list)
    groups: list[GroupStatus] = field(default_factory=list)
    backends: list[BackendStatus] = field(default_factory=list)
    slurm: SlurmStatus | None = None  # profile hpc only
    agent_error: str = ""
    state: str = "running"  # "stopped": every node's machine is stopped (host restart)
    hint: str = ""  # what to do about the state, for a human

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_table(self) -> str:
        ha = self.profile in AGENT_PROFILES
        rows = [("NODE", "ADDRESS", "ONLINE", "SSH", "WEB", "ETCD", "NOTE")]
        for n in self.nodes:
            note = n.error or ("standby" if n.standby else n.web_reply)
            rows.append(
                (
                    n.name,
                    n.address,
                    "yes" if n.online else "no",
                    "ok" if n.ssh else "down",
                    "ok" if n.web else ("-" if ha and n.online else "down"),
                    "member" if n.etcd else "-",
                    note,
                )
            )
        settings = [self.provider, f"profile {self.profile}"]
        if self.lb_engine:
            settings.append(f"engine {self.lb_engine}")
        if self.lease_ttl:
            settings.append(f"lease {self.lease_ttl} s")
        lines = [f"cluster {self.cluster} ({', '.join(settings)})"]
        if self.state == "stopped":
            lines[0] += " is stopped: every node is stopped"
            lines.append(self.hint)
        elif ha:
            lines[0] += f", quorum: {'yes' if self.quorum else 'no'}"
            if self.agent_error:
                lines.append(f"agents: {self.agent_error}")
        lines += table(rows)
        if self.groups:
            lines.append("")
            group_rows = [("GROUP", "VIP", "NODE", "STATE", "FAILCOUNTS", "BANS")]
            for g in self.groups:
                counts = ",".join(f"{k}={v}" for k, v in sorted(g.failcounts.items()) if v)
                group_rows.append(
                    (
                        g.name,
                        g.vip,
                        g.node or "-",
                        g.state_text,
                        counts or "-",
                        ",".join(g.bans) or "-",
                    )
                )
            lines += table(group_rows)
            for g in self.groups:
                if g.fencing is not None:
                    why = f": {g.fencing['error']}" if g.fencing.get("error") else ""
                    lines.append(
                        f"{g.name} waits for {g.fencing['target']} to be fenced{why} "
                        f"(if it is off: clusterctl fence {g.fencing['target']} --confirm)"
                    )
                if g.last_failover is not None:
                    f = g.last_failover
                    lines.append(f"last failover of {g.name}: {when(f.at)} to {f.node}, {f.reason}")
        if self.backends:
            lines.append("")
            backend_rows = [("BACKEND", "ADDRESS", "STATE", "WEIGHT", "HEALTH", "ACTIVE")]
            for b in self.backends:
                active = "-" if b.active_connections is None else str(b.active_connections)
                backend_rows.append((b.node, b.address, b.state, str(b.weight), b.health, active))
            lines += table(backend_rows)
        if self.slurm is not None:
            lines += ["", *slurm_lines(self.slurm)]
        return "\n".join(lines)


def slurm_lines(slurm: SlurmStatus) -> list[str]:
    if slurm.error:
        return [f"slurm: {slurm.error}"]
    rows = [("SLURM NODE", "STATE", "CPUS", "REASON")]
    rows += [(n.name, n.state, str(n.cpus), n.reason or "-") for n in slurm.nodes]
    return [*table(rows), f"jobs: {slurm.running} running, {slurm.pending} pending"]


def when(at: float) -> str:
    """An entry's time as an operator reads it: local time, to the millisecond."""
    stamp = datetime.fromtimestamp(at).astimezone()
    return stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{stamp.microsecond // 1000:03d}"


def table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


# Sandbox and cluster nodes are reached directly, never through an HTTP proxy from the env.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_probe(address: str, port: int = 80, timeout: float = 2.0) -> tuple[bool, str]:
    """GET / on a node; return whether it answered 200 and the first line of the page."""
    try:
        with _OPENER.open(f"http://{address}:{port}/", timeout=timeout) as resp:
            body = resp.read(512).decode(errors="replace")
            return resp.status == 200, body.strip().splitlines()[0] if body.strip() else ""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, str(getattr(exc, "reason", exc))


def http_probe_all(addresses: list[str]) -> list[tuple[bool, str]]:
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(addresses)))) as pool:
        return list(pool.map(http_probe, addresses))
