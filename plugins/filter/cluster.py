"""Filters of the clusterctl.cluster collection: the topology rules, written once for the
roles and playbooks (clusterctl/topology.py and InventoryNode.cluster_address are the same
rules for the controller; tests/unit/test_filters.py checks that they agree).

    {{ hostvars[host] | clusterctl.cluster.node_address(host) }}
    {{ groups['cluster'] | clusterctl.cluster.etcd_members }}
    {{ groups['cluster'] | clusterctl.cluster.fence_devices(hostvars, '/etc/clusterctl/fence') }}
    {{ clusterctl_profile | default('lb') | clusterctl.cluster.runs_agent }}
"""

from __future__ import annotations


def node_address(host_vars, name):
    """The address etcd, the agents, the certificates and the guard use for a node."""
    for key in ("clusterctl_node_address", "ansible_host"):
        value = host_vars.get(key) if hasattr(host_vars, "get") else None
        if value:
            return str(value)
    return str(name)


def node_addresses(names, hostvars):
    """node_address of each name, in order."""
    return [node_address(hostvars[name], name) for name in names]


# the profiles with etcd and the failover agent (clusterctl/profiles.py: AGENT_PROFILES)
AGENT_PROFILES = ("ha", "lb", "hpc", "vm")


def runs_agent(profile):
    """Whether a cluster of ``profile`` runs etcd and the failover agent."""
    return str(profile) in AGENT_PROFILES


def etcd_members(names):
    """The nodes that run an etcd member: the first 3, or 5 from 5 nodes on."""
    names = list(names)
    return names[: 5 if len(names) >= 5 else 3]


def fence_devices(names, hostvars, secrets_dir):
    """Each node's fence device (its inventory ``clusterctl_fence``: agent, options,
    secrets_file on the controller) as the agent's config takes it: the fence agent's ``plug``
    defaults to the node's name, and the credentials file is named by where the agent role
    puts it on the nodes (``secrets_dir``/<node>.secrets)."""
    devices = {}
    for name in names:
        spec = hostvars[name].get("clusterctl_fence") if hasattr(hostvars[name], "get") else None
        if not spec:
            continue
        options = dict(spec.get("options") or {})
        options.setdefault("plug", name)
        device = {
            "agent": spec.get("agent", ""),
            "options": {k: str(v) for k, v in options.items()},
        }
        if spec.get("secrets_file"):
            device["secrets_file"] = f"{secrets_dir}/{name}.secrets"
        devices[name] = device
    return devices


class FilterModule:
    def filters(self):
        return {
            "node_address": node_address,
            "node_addresses": node_addresses,
            "etcd_members": etcd_members,
            "runs_agent": runs_agent,
            "fence_devices": fence_devices,
        }
