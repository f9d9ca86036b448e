"""Scaling a cluster out and in: `clusterctl scale --add N` / `--remove NODE`.

Adding provisions only the new nodes (`playbooks/scale.yml`, limited to them), so nothing
restarts on the others; their agents register them as LB backends, and the load balancer
sends traffic once they pass its health checks. Removing drains the node's backend first,
puts it in standby (a group it holds moves away), stops its services
(`playbooks/remove_node.yml`) and then deletes the machine (sandbox) or forgets it. On an hpc
cluster a new node's slurmd registers itself with the controller (a dynamic node: no other
node's configuration changes), and a node to remove is drained in Slurm first: its running
jobs finish, then it leaves Slurm.
"""

from __future__ import annotations

from pathlib import Path

from clusterctl import cluster as api
from clusterctl.errors import ClusterctlError
from clusterctl.hpc import drain_node, forget
from clusterctl.inventory import MIN_NODES, load_inventory, reachable_nodes
from clusterctl.profiles import AGENT_PROFILES
from clusterctl.reporter import Reporter
from clusterctl.slurm import shell_for
from clusterctl.sshcheck import forget_host_keys, wait_and_trust
from clusterctl.state import StateDir
from clusterctl.trust import cluster_ca, ensure_trust


def add(cluster: str, count: int | None, reporter: Reporter) -> list[str]:
    state = StateDir(cluster)
    record = state.load()
    if api.needs_tls_upgrade(record):
        raise ClusterctlError(
            f"cluster {cluster!r} still runs etcd and its agents over plain HTTP",
            f"upgrade it first with `clusterctl up --cluster {cluster}`",
        )
    api.pin_etcd_members(state, record)  # before the node count changes the rule's answer
    provider = api.provider_for_record(state, reporter, record)
    # the existing nodes' host keys first: the guards and certificates of all of them change,
    # and nothing may be made or copied while one of them is an impostor
    existing = reachable_nodes(record)
    reporter.progress(f"checking the host keys of {len(existing)} nodes")
    wait_and_trust(existing, provider.key_for, state.known_hosts, provider.ssh_wait_s)
    if record.provider == "podman":
        if not count or count < 1:
            raise ClusterctlError("--add needs a number of nodes >= 1", "e.g. --add 1")
        from clusterctl.providers.podman import PodmanProvider

        assert isinstance(provider, PodmanProvider)
        new = provider.add_nodes(record, count)
    else:
        inventory = load_inventory(Path(record.source_inventory))
        known = {n.name for n in record.nodes}
        new = [n for n in inventory if n.name not in known]
        if not new:
            raise ClusterctlError(
                f"no new hosts in {record.source_inventory}",
                "add the hosts to the inventory's `cluster` group first",
            )
        if count is not None and count != len(new):
            raise ClusterctlError(
                f"--add {count}, but the inventory has {len(new)} new host(s)",
                "omit the number with the ssh provider",
            )
        from clusterctl.state import NodeRecord

        record.nodes.extend(NodeRecord(n.name, n.cluster_address) for n in new)
        state.save(record)
    reporter.progress(f"waiting for SSH on {', '.join(n.name for n in new)}")
    wait_and_trust(new, provider.key_for, state.known_hosts, provider.ssh_wait_s)
    ensure_trust(state, record)
    known = [n.name for n in record.nodes if n.name not in {m.name for m in new}]
    api.run_cluster_playbook(
        "guard.yml", state, provider, record, reporter, len(known), limit=",".join(known)
    )
    added = ",".join(n.name for n in new)
    api.run_cluster_playbook("scale.yml", state, provider, record, reporter, len(new), limit=added)
    return [n.name for n in new]


def remove(cluster: str, node: str, reporter: Reporter, drain_timeout: float = 60.0) -> None:
    state, record = api.cluster_with_node(cluster, node)
    names = [n.name for n in record.nodes]
    members = api.etcd_members(record)
    if node in members:
        others = ", ".join(n for n in names if n not in members) or "none yet"
        raise ClusterctlError(
            f"{node} runs one of the {len(members)} etcd members; removing it would leave "
            f"{len(members) - 1}",
            f"remove a node that is not an etcd member ({others})",
        )
    if len(names) - 1 < MIN_NODES:
        raise ClusterctlError(
            f"removing {node} would leave {len(names) - 1} nodes; a cluster needs {MIN_NODES}",
            "add a node first (`clusterctl scale --add 1`)",
        )
    provider = api.provider_for_record(state, reporter, record)
    if record.profile == "hpc":
        drain_node(shell_for(state, record, provider), node, reporter, drain_timeout)
    if record.profile == "lb":
        from clusterctl.backends import drain

        reporter.progress(f"draining {node}")
        drain(cluster, node, reporter, timeout=drain_timeout)
    if record.profile in AGENT_PROFILES:
        reporter.progress(f"moving {node}'s groups away (standby)")
        api.set_standby(cluster, node, True)
        api.wait_not_holding(cluster, node)
    api.run_cluster_playbook("remove_node.yml", state, provider, record, reporter, 1, limit=node)
    if record.profile in AGENT_PROFILES:
        client = api.agent_client(state, record)
        client.standby(node, False)  # the node is gone: leave no standby key behind
        if record.profile == "lb":
            client.delete_backend(node)
    address = next(n.address for n in record.nodes if n.name == node)
    if record.provider == "podman":
        from clusterctl.providers.podman import PodmanProvider

        assert isinstance(provider, PodmanProvider)
        provider.remove_node(record, node)
        provider.inventory_path(record)
    else:
        record.nodes = [n for n in record.nodes if n.name != node]
        state.save(record)
    forget_host_keys(state.known_hosts, [address])
    cluster_ca(state).forget_node(node)
    if record.profile == "hpc":  # its slurmd is stopped: the dynamic node can go
        forget(shell_for(state, record, provider), node)
    if record.profile in AGENT_PROFILES:
        # the remaining guards stop letting the removed node's address in
        remaining = [n.name for n in record.nodes]
        api.run_cluster_playbook(
            "guard.yml",
            state,
            provider,
            record,
            reporter,
            len(remaining),
            limit=",".join(remaining),
        )
