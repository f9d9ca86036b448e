"""Filters of the clusterctl.cluster collection: the topology rules, written once for the
roles and playbooks (clusterctl/topology.py and InventoryNode.cluster_address are the same
rules for the controller; tests/unit/test_filters.py checks that they agree).

    {{ hostvars[host] | clusterctl.cluster.node_address(host) }}
    {{ groups['cluster'] | clusterctl.cluster.etcd_members }}
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


def etcd_members(names):
    """The nodes that run an etcd member: the first 3, or 5 from 5 nodes on."""
    names = list(names)
    return names[: 5 if len(names) >= 5 else 3]


class FilterModule:
    def filters(self):
        return {
            "node_address": node_address,
            "node_addresses": node_addresses,
            "etcd_members": etcd_members,
        }
