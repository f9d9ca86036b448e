"""Helpers of the restart tests: etcd's quorum watched from the host, a node's restart
(crash, wait until its lease is gone, start), and "online" as the agents report it."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from .conftest import Sandbox, podman
from .hahelpers import Ticker, api_status, cli_status, container, tls_opener, wait_for


def etcd_addresses(sandbox: Sandbox) -> list[str]:
    """Addresses of the nodes that run an etcd member, as `clusterctl status` says."""
    return [n["address"] for n in cli_status(sandbox)["nodes"] if n["etcd"]]


def member_healthy(
    opener: urllib.request.OpenerDirector, address: str, timeout: float = 0.5
) -> bool:
    """etcd's own /health of one member (over TLS, as the controller): true only with a
    leader and quorum."""
    try:
        with opener.open(f"https://{address}:2379/health", timeout=timeout) as resp:
            return b'"health":"true"' in resp.read()
    except (urllib.error.URLError, OSError):
        return False


class QuorumWatch(Ticker):
    """Every ``period`` s, asks each etcd member's /health (in parallel) and records whether
    any member reported a healthy cluster. ``longest_loss()`` is the longest stretch in
    which none did: a leader election costs a few hundred ms; a lost quorum lasts until a
    majority is back."""

    def __init__(self, sandbox: Sandbox, addresses: list[str], period: float = 0.2) -> None:
        super().__init__(period, workers=len(addresses))
        self.addresses = addresses
        self.opener = tls_opener(sandbox)
        self.samples: list[tuple[float, bool]] = []

    def tick(self) -> None:
        at = time.monotonic()
        healthy = self._pool.map(lambda a: member_healthy(self.opener, a), self.addresses)
        self.samples.append((at, any(healthy)))

    def longest_loss(self) -> float:
        longest, since = 0.0, None
        for at, healthy in self.samples:
            if not healthy and since is None:
                since = at
            elif healthy and since is not None:
                longest, since = max(longest, at - since), None
        if since is not None:
            longest = max(longest, self.samples[-1][0] - since)
        return longest


def online(sandbox: Sandbox) -> set[str]:
    """Nodes the agents report online (a live member key; on an etcd member node, written
    only once that member has rejoined)."""
    status = api_status(sandbox)
    return {m["name"] for m in (status or {}).get("members", []) if m.get("online")}


def crash_and_restart(sandbox: Sandbox, nodes: list[str], timeout: float = 120) -> float:
    """`podman kill` the nodes, wait until the agents see them gone (their leases expired,
    as after any real reboot), `podman start` them, and wait until each reports online
    again. Returns the seconds from the kill to the last one online."""
    killed = time.monotonic()
    for node in nodes:
        podman("kill", container(sandbox, node))
    wait_for(lambda: not online(sandbox) & set(nodes), 15, 0.1, f"{nodes} offline")
    for node in nodes:
        podman("start", container(sandbox, node))
    wait_for(lambda: set(nodes) <= online(sandbox), timeout, 0.2, f"{nodes} online again")
    return time.monotonic() - killed
