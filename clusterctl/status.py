"""The cluster status data model, rendered as a table or as JSON."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class NodeStatus:
    name: str
    address: str
    online: bool
    ssh: bool
    web: bool
    web_reply: str = ""
    etcd: bool = False
    error: str = ""


@dataclass(frozen=True)
class GroupStatus:
    name: str
    vip: str
    node: str
    state: str


@dataclass(frozen=True)
class BackendStatus:
    node: str
    address: str
    state: str
    weight: int


@dataclass(frozen=True)
class ClusterStatus:
    cluster: str
    provider: str
    quorum: bool
    nodes: list[NodeStatus] = field(default_factory=list)
    groups: list[GroupStatus] = field(default_factory=list)
    backends: list[BackendStatus] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_table(self) -> str:
        rows = [("NODE", "ADDRESS", "SSH", "WEB", "ETCD", "NOTE")]
        for n in self.nodes:
            rows.append(
                (
                    n.name,
                    n.address,
                    "ok" if n.ssh else "down",
                    "ok" if n.web else "down",
                    "member" if n.etcd else "-",
                    n.error or n.web_reply,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [
            f"cluster {self.cluster} ({self.provider}), quorum: {'yes' if self.quorum else 'no'}"
        ]
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        if self.groups:
            lines.append("")
            lines.append("GROUP  VIP  NODE  STATE")
            lines += [f"{g.name}  {g.vip}  {g.node or '-'}  {g.state}" for g in self.groups]
        return "\n".join(lines)


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
