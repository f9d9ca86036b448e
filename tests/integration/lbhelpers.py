"""Helpers of the LB integration tests: a bounded load client on the VIP, the backends as
the agents report them, and healing the `lb` sandbox between tests.

Built on hahelpers (the VIP, the agents' API, `wait_for`); the node list of an lb sandbox
changes with `clusterctl scale`, so ``refresh_nodes`` re-reads it from `clusterctl status`.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
from collections import Counter

from clusterctl.topology import etcd_member_nodes

from .conftest import Sandbox, cli, podman
from .hahelpers import (
    _OPENER,
    Probe,
    api_get,
    api_status,
    container,
    container_state,
    node_exec,
    node_names,
    unit_active,
    vip,
    vip_holders,
    wait_for,
    web_group,
)


class LoadClient:
    """``threads`` clients, each looping ``GET http://VIP/`` (a new TCP connection per
    request, ``timeout`` s each, ``pause`` s between requests) for at most ``limit`` s, or
    until the context ends. Records every request as a ``Probe``: the answering node (the
    page's first line) or None and the error."""

    def __init__(
        self,
        address: str,
        threads: int = 4,
        timeout: float = 1.0,
        pause: float = 0.02,
        limit: float = 300.0,
    ) -> None:
        self.url = f"http://{address}/"
        self.timeout = timeout
        self.pause = pause
        self.limit = limit
        self.probes: list[Probe] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, name=f"load-{i}", daemon=True)
            for i in range(threads)
        ]

    def __enter__(self) -> LoadClient:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)

    def _loop(self) -> None:
        end = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < end:
            sent = time.monotonic()
            node, error = None, ""
            try:
                with _OPENER.open(self.url, timeout=self.timeout) as resp:
                    lines = resp.read().decode(errors="replace").splitlines()
                    node = lines[0].strip() if lines and resp.status == 200 else None
                    error = "" if node else f"HTTP {resp.status}"
            except (urllib.error.URLError, OSError, ValueError) as exc:
                error = str(getattr(exc, "reason", exc))
            with self._lock:
                self.probes.append(Probe(sent, time.monotonic(), node, error))
            self._stop.wait(self.pause)

    def snapshot(self, since: float = 0.0, until: float | None = None) -> list[Probe]:
        with self._lock:
            probes = list(self.probes)
        return sorted(
            (p for p in probes if p.sent >= since and (until is None or p.sent <= until)),
            key=lambda p: p.sent,
        )

    def failed(self, since: float = 0.0, until: float | None = None) -> list[Probe]:
        return [p for p in self.snapshot(since, until) if p.node is None]

    def counts(self, since: float = 0.0, until: float | None = None) -> Counter:
        """Answers per node (failed requests under the key None)."""
        return Counter(p.node for p in self.snapshot(since, until))

    def last_answer(self, node: str) -> float | None:
        """When the last request that ``node`` answered was sent."""
        times = [p.sent for p in self.snapshot() if p.node == node]
        return times[-1] if times else None

    def wait_answer(self, node: str, since: float, timeout: float) -> Probe:
        """The first request sent after ``since`` that ``node`` answered."""

        def found() -> Probe | None:
            return next((p for p in self.snapshot(since) if p.node == node), None)

        return wait_for(found, timeout, 0.05, f"an answer from {node} on {self.url}")

    def summary(self, since: float = 0.0, until: float | None = None) -> str:
        probes = self.snapshot(since, until)
        counts = Counter(p.node or "FAILED" for p in probes)
        parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        return f"{len(probes)} requests: {parts}"


# -- backends ------------------------------------------------------------------------------


def backends(sandbox: Sandbox) -> dict | None:
    """``GET /v1/backends`` from the first node that answers it (None if none does)."""
    for node in node_names(sandbox):
        code, body = api_get(sandbox, node, "/v1/backends", timeout=2.0)
        if code == 200:
            return json.loads(body)
    return None


def backend_rows(sandbox: Sandbox) -> dict[str, dict]:
    return {row["node"]: row for row in (backends(sandbox) or {}).get("backends", [])}


def refresh_nodes(sandbox: Sandbox) -> list[str]:
    """Re-read the node list (it changes with `clusterctl scale`) into ``sandbox.info``."""
    result = cli("status", "--cluster", sandbox.cluster, "--json", timeout=60)
    assert result.rc == 0, result.stderr[-2000:]
    sandbox.info["nodes"] = [
        {"name": n["name"], "address": n["address"]} for n in result.json()["nodes"]
    ]
    return node_names(sandbox)


def lb_ready(sandbox: Sandbox, engine: str = "nft") -> str | None:
    """The holder when the lb cluster is fully healthy: quorum, every node online, web
    started on one node holding the VIP, no fail count, the wanted engine, and every node a
    backend that is active, weight 1, up and in rotation. None otherwise."""
    status = api_status(sandbox)
    if not status or not status.get("quorum"):
        return None
    names = set(node_names(sandbox))
    if {m["name"] for m in status.get("members", []) if m.get("online")} != names:
        return None
    group = web_group(status)
    if group.get("state") != "started" or any(group.get("failcounts", {}).values()):
        return None
    data = backends(sandbox)
    if not data or data.get("engine") != engine:
        return None
    rows = {r["node"]: r for r in data["backends"]}
    if set(rows) != names:
        return None
    for r in rows.values():
        if (r["state"], r["weight"], r["health"], r["in_rotation"]) != ("active", 1, "up", True):
            return None
    if vip_holders(sandbox) != [group["node"]]:
        return None
    return group["node"]


def lb_heal(sandbox: Sandbox, base_nodes: list[str], timeout: float = 120) -> str:
    """Bring the lb sandbox back to ``base_nodes`` on engine nft, all backends active with
    weight 1 and healthy; returns the holder.

    Removes extra nodes a failed scale test left (`clusterctl scale --remove`), starts
    killed nodes (they rejoin by themselves), switches the engine back (`clusterctl up`),
    starts stopped web servers, resets weights, states and standby, cleans fail counts."""
    names = refresh_nodes(sandbox)
    for extra in [n for n in names if n not in base_nodes]:
        result = cli("scale", "--remove", extra, "--cluster", sandbox.cluster, timeout=300)
        assert result.rc == 0, result.stderr[-3000:]
    refresh_nodes(sandbox)
    for n in base_nodes:
        if container_state(sandbox, n) != "running":
            podman("start", container(sandbox, n))
    data = wait_for(lambda: backends(sandbox), 120, 0.5, "the agents' backends")
    if data.get("engine") != "nft":
        result = cli("up", "--cluster", sandbox.cluster, "--lb-engine", "nft", timeout=600)
        assert result.rc == 0, result.stderr[-3000:]
    members = etcd_member_nodes(base_nodes)
    for n in base_nodes:
        units = ["etcd"] if n in members else []
        node_exec(sandbox, n, "systemctl", "start", *units, "nginx", "clusterctl-agent")

    def settled() -> str | None:
        status = api_status(sandbox)
        if not status or not status.get("quorum"):
            return None
        # every etcd member running, not just a quorum: a member still restarting from an
        # earlier fault (the chaos run kills them) took the quorum down in the next test
        if not all(unit_active(sandbox, n, "etcd") for n in members):
            return None
        for node, row in backend_rows(sandbox).items():
            if row["state"] != "active" or row["weight"] != 1:
                cli("weight", node, "1", "--cluster", sandbox.cluster, timeout=60)
                cli("undrain", node, "--cluster", sandbox.cluster, timeout=60)
        if web_group(status).get("bans"):
            api_get(sandbox, node_names(sandbox)[0], "/v1/groups/web/clear", body={})
        for member in status.get("members", []):
            if member.get("standby"):
                cli("unstandby", member["name"], "--cluster", sandbox.cluster, timeout=60)
        if any(web_group(status).get("failcounts", {}).values()):
            cli("cleanup", "web", "--cluster", sandbox.cluster, timeout=60)
        return lb_ready(sandbox)

    return wait_for(settled, timeout, 0.5, "a healthy lb cluster")


def vip_serves(sandbox: Sandbox) -> bool:
    try:
        with _OPENER.open(f"http://{vip(sandbox)}/", timeout=1.0) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False
