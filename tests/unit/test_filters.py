"""The collection's filters hold the same topology rules as the controller's Python."""

from __future__ import annotations

import importlib.util

import pytest

from clusterctl.inventory import InventoryNode
from clusterctl.paths import PROJECT_ROOT
from clusterctl.profiles import AGENT_PROFILES, PROFILES
from clusterctl.topology import etcd_member_nodes

spec = importlib.util.spec_from_file_location(
    "cluster_filters", PROJECT_ROOT / "plugins/filter/cluster.py"
)
filters = importlib.util.module_from_spec(spec)
assert spec.loader is not None
spec.loader.exec_module(filters)


@pytest.mark.parametrize("count", range(3, 9))
def test_etcd_members_agree_with_the_controller(count: int) -> None:
    names = [f"node{i}" for i in range(1, count + 1)]
    assert filters.etcd_members(names) == etcd_member_nodes(names)


@pytest.mark.parametrize("profile", [*PROFILES, "nonsense"])
def test_runs_agent_agrees_with_the_controller(profile: str) -> None:
    assert filters.runs_agent(profile) == (profile in AGENT_PROFILES)


@pytest.mark.parametrize(
    ("host_vars", "expected"),
    [
        ({"clusterctl_node_address": "10.0.0.5", "ansible_host": "web.example"}, "10.0.0.5"),
        ({"ansible_host": "10.0.0.6"}, "10.0.0.6"),
        ({"clusterctl_node_address": "", "ansible_host": "10.0.0.7"}, "10.0.0.7"),
        ({}, "web3"),
    ],
)
def test_node_address_agrees_with_the_inventory_parser(host_vars, expected) -> None:
    assert filters.node_address(host_vars, "web3") == expected
    node = InventoryNode(
        "web3",
        host_vars.get("ansible_host", "web3"),
        node_address=host_vars.get("clusterctl_node_address", ""),
    )
    assert node.cluster_address == expected
    hostvars = {"web3": host_vars, "a": {"ansible_host": "10.0.0.1"}}
    assert filters.node_addresses(["a", "web3"], hostvars) == ["10.0.0.1", expected]
