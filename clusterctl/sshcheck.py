"""SSH reachability checks and host-key collection with paramiko.

The controller itself only *probes* nodes (handshake and key authentication, no command):
all work on nodes goes through Ansible.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko

from clusterctl.errors import ClusterctlError
from clusterctl.inventory import InventoryNode
from clusterctl.state import write_private

REFUSED_GRACE_S = 3.0


@dataclass(frozen=True)
class SshProbe:
    node: str
    reachable: bool
    authenticated: bool
    host_key: paramiko.PKey | None = None
    error: str = ""


def known_hosts_name(node: InventoryNode) -> str:
    return node.address if node.port == 22 else f"[{node.address}]:{node.port}"


def probe(node: InventoryNode, key_file: Path, timeout: float = 3.0) -> SshProbe:
    """Connect, read the host key, and try public-key authentication."""
    try:
        sock = socket.create_connection((node.address, node.port), timeout=timeout)
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        return SshProbe(node.name, False, False, error=reason)
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = timeout
        transport.auth_timeout = timeout  # paramiko's default (30 s) outlasts any wait here
        transport.start_client(timeout=timeout)
        host_key = transport.get_remote_server_key()
        try:
            pkey = paramiko.PKey.from_path(key_file)
            transport.auth_publickey(node.user, pkey)
            return SshProbe(node.name, True, transport.is_authenticated(), host_key)
        except paramiko.AuthenticationException:
            return SshProbe(node.name, True, False, host_key, error=f"key {key_file} was refused")
    except (paramiko.SSHException, OSError, EOFError) as exc:
        return SshProbe(node.name, False, False, error=str(exc) or type(exc).__name__)
    finally:
        transport.close()


def probe_all(
    nodes: list[InventoryNode], key_for: Callable[[InventoryNode], Path], timeout: float = 3.0
) -> dict[str, SshProbe]:
    """Probe every node at once. The probes run in daemon threads: on Ctrl-C the caller's
    KeyboardInterrupt leaves at once instead of waiting for handshakes in flight (a pool's
    threads are joined at exit, which kept an interrupted `up` waiting on booting nodes)."""
    results: queue.SimpleQueue[SshProbe] = queue.SimpleQueue()

    def run(node: InventoryNode) -> None:
        try:
            results.put(probe(node, key_for(node), timeout))
        except Exception as exc:  # every node must answer, or the caller waits forever
            results.put(SshProbe(node.name, False, False, error=str(exc) or type(exc).__name__))

    for node in nodes:
        threading.Thread(
            target=run,
            args=(node,),
            name=f"ssh-probe-{node.name}",
            daemon=True,
        ).start()
    found = [results.get() for _ in nodes]
    return {r.node: r for r in found}


def forget_host_keys(known_hosts: Path, addresses: list[str]) -> None:
    """Drop recorded keys of hosts that were rebuilt (we made them, so we know)."""
    if not addresses or not known_hosts.exists():
        return
    names = set(addresses)
    kept = [
        line
        for line in known_hosts.read_text().splitlines(keepends=True)
        if line.split(" ", 1)[0] not in names
    ]
    write_private(known_hosts, "".join(kept))


def wait_and_trust(
    nodes: list[InventoryNode],
    key_for: Callable[[InventoryNode], Path],
    known_hosts: Path,
    deadline_s: float,
    on_wait: Callable[[str], None] | None = None,
) -> None:
    """Wait until every node accepts our key, then record host keys in known_hosts.

    A host key already recorded for an address must match (a changed key is an error,
    as with ssh's StrictHostKeyChecking); new ones are trusted on first contact.
    """
    deadline = time.monotonic() + deadline_s
    pending = list(nodes)
    last: dict[str, SshProbe] = {}
    refused_since: float | None = None
    while pending:
        last.update(probe_all(pending, key_for, timeout=2.0))
        pending = [n for n in pending if not last[n.name].authenticated]
        refused = any(last[n.name].reachable for n in pending)
        if refused and refused_since is None:
            refused_since = time.monotonic()
        if not pending or time.monotonic() >= deadline:
            break
        # sshd answers but rejects the key: a fresh node may still be writing its
        # authorized_keys, but after a few seconds waiting longer will not help
        if refused and time.monotonic() - (refused_since or 0) > REFUSED_GRACE_S:
            break
        if on_wait:
            on_wait(f"waiting for SSH on {', '.join(n.name for n in pending)}")
        time.sleep(0.3)
    if pending:
        node = pending[0]
        result = last[node.name]
        if result.reachable:
            raise ClusterctlError(
                f"SSH authentication to {node.name} ({node.user}@{node.address}) failed: "
                f"{result.error}",
                "check ansible_ssh_private_key_file and that its public key is in "
                "~/.ssh/authorized_keys on the node",
            )
        raise ClusterctlError(
            f"node {node.name} ({node.address}:{node.port}) is unreachable over SSH: "
            f"{result.error}",
            "check the address in the inventory, that the host is up and that sshd listens",
        )
    host_keys = paramiko.HostKeys()
    if known_hosts.exists():
        host_keys.load(str(known_hosts))
    for node in nodes:
        key = last[node.name].host_key
        assert key is not None
        name = known_hosts_name(node)
        recorded = host_keys.lookup(name)
        # a host known by a key of one type that now shows only another type is as
        # suspect as a changed key (someone else answering with a key of their own)
        if recorded and recorded.get(key.get_name()) != key:
            raise ClusterctlError(
                f"the SSH host key of {node.name} ({name}) changed since it was recorded",
                f"if the host was rebuilt, remove its line from {known_hosts}",
            )
        host_keys.add(name, key.get_name(), key)
    lines = []
    for name in host_keys:
        for key_type, key in host_keys.lookup(name).items():
            lines.append(f"{name} {key_type} {key.get_base64()}\n")
    write_private(known_hosts, "".join(lines))
