"""Choosing a sandbox subnet that does not clash with anything on the host."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import socket
import subprocess
from collections.abc import Iterable

from clusterctl.errors import ClusterctlError

# /24s are handed out from this block; the first free one after a per-cluster offset.
POOL = ipaddress.ip_network("10.213.0.0/16")
FIRST_HOST = 11  # node1 gets .11, node2 .12, ...; .1 is the podman gateway


def host_networks() -> list[ipaddress.IPv4Network]:
    """Networks routed or addressed on the host (podman networks are added by the caller)."""
    found: list[ipaddress.IPv4Network] = []
    for cmd in (["ip", "-j", "-4", "route", "show", "table", "all"], ["ip", "-j", "-4", "addr"]):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
            data = json.loads(out or "[]")
        except (OSError, ValueError, subprocess.TimeoutExpired):
            continue
        for entry in data:
            dst = entry.get("dst")
            if dst and dst != "default":
                with contextlib.suppress(ValueError):
                    found.append(ipaddress.ip_network(dst, strict=False))
            for info in entry.get("addr_info", []):
                if info.get("local") and not info["local"].startswith("127."):
                    found.append(
                        ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False)
                    )
    return [n for n in found if isinstance(n, ipaddress.IPv4Network)]


def clashes(candidate: ipaddress.IPv4Network, taken: Iterable[ipaddress.IPv4Network]) -> list:
    return [net for net in taken if candidate.overlaps(net)]


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ClusterctlError(
            f"invalid subnet {text!r}: {exc}", "use CIDR notation, e.g. 10.213.7.0/24"
        ) from None
    if not isinstance(net, ipaddress.IPv4Network) or not 16 <= net.prefixlen <= 26:
        raise ClusterctlError(
            f"subnet {text} is not usable for a sandbox",
            "use an IPv4 network with a prefix between /16 and /26",
        )
    return net


def choose_subnet(cluster: str, taken: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    subnets = list(POOL.subnets(new_prefix=24))
    start = int(hashlib.sha256(cluster.encode()).hexdigest(), 16) % len(subnets)
    for i in range(len(subnets)):
        candidate = subnets[(start + i) % len(subnets)]
        if not clashes(candidate, taken):
            return candidate
    raise ClusterctlError(
        f"no free /24 left in {POOL}", "pass --subnet with a free network of your choice"
    )


def node_address(subnet: ipaddress.IPv4Network, index: int) -> str:
    """Address of node number `index` (1-based)."""
    return str(subnet.network_address + FIRST_HOST + index - 1)


VIP_HOST = 100  # the default group's VIP: .100 of the sandbox subnet


def vip_address(subnet: ipaddress.IPv4Network) -> str:
    return str(subnet.network_address + VIP_HOST)


# node addresses run from .11 and must stay below the VIP's .100
MAX_NODES = VIP_HOST - FIRST_HOST


def is_host_address(subnet: ipaddress.IPv4Network, address: str) -> bool:
    """``address`` is a usable host of ``subnet`` (not its network or broadcast address)."""
    ip = ipaddress.ip_address(address)
    return ip in subnet and ip not in (subnet.network_address, subnet.broadcast_address)


def node_mac(cluster: str, node: str) -> str:
    """A stable, locally administered MAC per node: a re-created node keeps its MAC, so the
    host's neighbour cache stays valid (docs/machine-notes.md)."""
    digest = hashlib.sha256(f"{cluster}/{node}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])


def source_addresses(targets: Iterable[str]) -> list[str]:
    """The controller's own addresses towards these hosts, as the kernel's routes pick them.

    A UDP socket's connect sends nothing; it only binds the socket to the route's source.
    Behind NAT the hosts see another address: the roles add the SSH session's source too."""
    found: list[str] = []
    for target in targets:
        family = socket.AF_INET6 if ":" in target else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((target, 9))
            except OSError:
                continue
            address = probe.getsockname()[0]
        if address not in found:
            found.append(address)
    return found
