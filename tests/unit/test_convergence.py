"""The record of the last converge: what invalidates it, and how drift is told."""

from __future__ import annotations

import stat

import pytest

from clusterctl import convergence
from clusterctl.runner import ManagedState
from clusterctl.state import StateDir

VARS = {"clusterctl_lease_ttl": 1, "clusterctl_groups": None}


@pytest.fixture
def state(tmp_path) -> StateDir:
    state = StateDir("demo", root=tmp_path)
    state.create()
    (state.path / "inventory.yml").write_text("all: {}\n")
    (state.path / "pki").mkdir()
    (state.path / "pki" / "ca.crt").write_text("CA 1\n")
    return state


def test_the_fingerprint_follows_the_inputs_and_nothing_else(state: StateDir) -> None:
    first = convergence.input_fingerprint(state, state.inventory, VARS)
    assert convergence.input_fingerprint(state, state.inventory, dict(VARS)) == first
    # not inputs: the runner's artifacts, the record itself, the cluster record, host keys
    (state.path / "runner").mkdir()
    (state.path / "runner" / "log").write_text("run 2\n")
    (state.path / "known_hosts").write_text("node1 ssh-ed25519 AAAA\n")
    (state.path / "cluster.json").write_text("{}\n")
    convergence.save(state, first, {}, {})
    assert convergence.input_fingerprint(state, state.inventory, VARS) == first
    # inputs: a certificate, the inventory, a variable
    (state.path / "pki" / "ca.crt").write_text("CA 2\n")
    second = convergence.input_fingerprint(state, state.inventory, VARS)
    assert second != first
    (state.path / "inventory.yml").write_text("all: {hosts: {node4: {}}}\n")
    assert convergence.input_fingerprint(state, state.inventory, VARS) != second
    longer = {**VARS, "clusterctl_lease_ttl": 2}
    assert convergence.input_fingerprint(state, state.inventory, longer) != second


def test_the_record_round_trips_privately_and_tells_drift(state: StateDir) -> None:
    managed = {"node1": ManagedState({"/etc/default/etcd"}, {"etcd"}).to_dict()}
    one = {"/etc/default/etcd": "a1", "unit etcd": "active", "packages": "p1"}
    two = {"boot links": "b2"}
    convergence.save(state, "f1", managed, {"node1": one, "node2": two})
    path = state.path / convergence.RECORD_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    record = convergence.load(state)
    assert record is not None and record.fingerprint == "f1"
    assert record.managed == {"node1": {"paths": ["/etc/default/etcd"], "units": ["etcd"]}}
    assert record.drifted({"node1": one, "node2": two}) == {}
    edited = {**one, "/etc/default/etcd": "a2", "unit etcd": "inactive"}
    assert record.drifted({"node1": edited, "node2": two}) == {
        "node1": ["/etc/default/etcd", "unit etcd"]
    }
    assert record.drifted({"node1": one}) == {"node2": ["answered nothing"]}
    assert record.drifted({"node1": one, "node2": two, "node3": two}) == {"node3": ["new node"]}
    convergence.forget(state)
    assert convergence.load(state) is None
    convergence.forget(state)  # forgetting twice is fine


def test_a_damaged_record_is_no_record(state: StateDir) -> None:
    (state.path / convergence.RECORD_NAME).write_text("{not json")
    assert convergence.load(state) is None
    (state.path / convergence.RECORD_NAME).write_text('{"fingerprint": "x"}')
    assert convergence.load(state) is None


def test_an_operators_inventory_outside_the_state_directory_counts(state, tmp_path) -> None:
    """The ssh provider runs against the operator's own inventory file: it, and the
    host_vars and group_vars Ansible reads beside it, are inputs too."""
    site = tmp_path / "site"
    (site / "host_vars").mkdir(parents=True)
    inventory = site / "hosts.yml"
    inventory.write_text("all: {hosts: {web1: {}}}\n")
    first = convergence.input_fingerprint(state, inventory, VARS)
    inventory.write_text("all: {hosts: {web1: {ansible_port: 2222}}}\n")
    second = convergence.input_fingerprint(state, inventory, VARS)
    assert second != first
    (site / "host_vars" / "web1.yml").write_text("clusterctl_vip: 10.0.0.9\n")
    assert convergence.input_fingerprint(state, inventory, VARS) != second
