"""The controller's library API: up, down and status of a cluster.

The CLI is a thin layer over these functions; so are the tests and benchmarks.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from clusterctl.errors import ClusterctlError
from clusterctl.inventory import InventoryNode
from clusterctl.providers.base import Provider
from clusterctl.reporter import Reporter
from clusterctl.runner import PlaybookResult, run_playbook
from clusterctl.sshcheck import forget_host_keys, probe_all, wait_and_trust
from clusterctl.state import ClusterRecord, StateDir, ensure_token
from clusterctl.status import ClusterStatus, NodeStatus, http_probe_all

PROFILES = {
    "ha": "etcd + clusterctl-agent: the group web (VIP + nginx) runs on exactly one node",
    "web": "nginx on every node, no failover (the walking skeleton)",
}
DEFAULT_PROFILE = "ha"


@dataclass
class UpOptions:
    cluster: str = "demo"
    provider: str = "podman"
    nodes: int = 3
    subnet: str | None = None
    inventory: Path | None = None
    converge: bool = True
    profile: str | None = None  # None: the cluster's recorded profile, else "ha"


@dataclass
class UpResult:
    record: ClusterRecord
    inventory: Path
    playbook: PlaybookResult | None = None
    created: list[str] = field(default_factory=list)


def make_provider(state: StateDir, reporter: Reporter, options: UpOptions) -> Provider:
    if options.provider == "podman":
        from clusterctl.providers.podman import PodmanProvider

        if options.inventory is not None:
            raise ClusterctlError(
                "-i/--inventory is for the ssh provider", "add --provider ssh, or drop -i"
            )
        return PodmanProvider(
            state,
            reporter,
            nodes=options.nodes,
            subnet=options.subnet,
            profile=options.profile or DEFAULT_PROFILE,
        )
    if options.provider == "ssh":
        from clusterctl.providers.ssh import SshProvider

        return SshProvider(state, reporter, options.inventory, options.profile or DEFAULT_PROFILE)
    raise ClusterctlError(f"unknown provider {options.provider!r}", "use podman or ssh")


def provider_for_record(state: StateDir, reporter: Reporter, record: ClusterRecord) -> Provider:
    options = UpOptions(record.name, record.provider, len(record.nodes), profile=record.profile)
    if record.provider == "ssh":
        options.inventory = Path(record.source_inventory) if record.source_inventory else None
    return make_provider(state, reporter, options)


def up(options: UpOptions, reporter: Reporter) -> UpResult:
    """Create (or start) the nodes, wait for SSH, and converge them with playbooks/site.yml."""
    state = StateDir(options.cluster)
    if options.profile is not None and options.profile not in PROFILES:
        raise ClusterctlError(
            f"unknown profile {options.profile!r}", f"use one of: {', '.join(PROFILES)}"
        )
    existing = state.load() if state.exists() else None
    if existing is not None:
        if options.profile and options.profile != existing.profile:
            raise ClusterctlError(
                f"cluster {options.cluster!r} runs profile {existing.profile}",
                f"omit --profile, or `clusterctl down --cluster {options.cluster}` first",
            )
        options.profile = existing.profile
    provider = make_provider(state, reporter, options)  # checks its tools first (podman)
    try:
        record, nodes = provider.ensure_nodes(existing)
        forget_host_keys(state.known_hosts, provider.new_host_addresses())
        reporter.progress(f"waiting for SSH on {len(nodes)} nodes")
        wait_and_trust(
            nodes, provider.key_for, state.known_hosts, provider.ssh_wait_s, reporter.progress
        )
    except ClusterctlError:
        if existing is None and options.provider == "ssh":
            state.remove()  # a first `up` on hosts that failed its checks leaves nothing behind
        raise
    ensure_token(state.api_token)
    inventory = provider.inventory_path(record)
    result = UpResult(record=record, inventory=inventory)
    if not options.converge:
        return result
    result.playbook = converge(state, provider, record, reporter, nodes)
    return result


def converge(
    state: StateDir,
    provider: Provider,
    record: ClusterRecord,
    reporter: Reporter,
    nodes: list[InventoryNode],
) -> PlaybookResult:
    outcome = run_playbook(
        "site.yml",
        inventory=provider.inventory_path(record),
        work_dir=state.runner_dir,
        reporter=reporter,
        host_count=len(nodes),
        extravars=provider.extravars(),
    )
    record.converged = True
    state.save(record)
    return outcome


def down(cluster: str, reporter: Reporter, purge: bool = False) -> list[str]:
    """Remove a cluster's containers, network and state. Safe to run again."""
    state = StateDir(cluster)
    record = None
    if state.exists():
        try:
            record = state.load()
        except ClusterctlError as exc:
            reporter.warn(f"{exc}; removing what can be found by name")
    removed: list[str] = []
    provider_name = record.provider if record else "podman"
    if provider_name == "podman":
        from clusterctl.providers.podman import PodmanProvider
        from clusterctl.providers.podman_cli import require_podman

        try:
            require_podman()
        except ClusterctlError:
            if record is not None:
                raise
        else:
            podman_provider = PodmanProvider(state, reporter)
            removed += podman_provider.destroy(record)
            if purge:
                removed += podman_provider.purge_image()
    if state.path.exists():
        state.remove()
        removed.append(f"state {state.path}")
    return removed


def status(cluster: str) -> ClusterStatus:
    """Probe every node: SSH (handshake + key) and the web server."""
    state = StateDir(cluster)
    record = state.load()
    from clusterctl.reporter import ListReporter

    provider = provider_for_record(state, ListReporter(), record)
    nodes = [InventoryNode(n.name, n.address) for n in record.nodes]
    if record.provider == "ssh":
        from clusterctl.inventory import load_inventory

        # if the inventory moved, probe the recorded addresses
        with contextlib.suppress(ClusterctlError):
            nodes = load_inventory(Path(record.source_inventory))
    ssh = probe_all(nodes, provider.key_for, timeout=2.0)
    web = http_probe_all([n.address for n in nodes])
    node_status = []
    for node, (web_ok, reply) in zip(nodes, web, strict=True):
        probe = ssh[node.name]
        node_status.append(
            NodeStatus(
                name=node.name,
                address=node.address,
                online=probe.authenticated,
                ssh=probe.authenticated,
                web=web_ok,
                web_reply=reply if web_ok else "",
                error="" if probe.authenticated else probe.error,
            )
        )
    return ClusterStatus(cluster=cluster, provider=record.provider, quorum=False, nodes=node_status)
