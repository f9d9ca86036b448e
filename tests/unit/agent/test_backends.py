"""Every agent registers its node as an LB backend once; the operator's changes persist."""

from __future__ import annotations

import json

from .agentsim import Sim


def backend(sim: Sim, node: str) -> dict:
    return json.loads(sim.admin.get(sim.keys.backend(node)))


def test_each_node_registers_itself_once_and_keeps_the_operators_changes():
    sim = Sim(settings={"backend": {"address": "10.0.0.11", "port": 80, "weight": 1}})
    sim.run(1.0)
    for node in sim.nodes:
        assert backend(sim, node) == {
            "address": "10.0.0.11",
            "port": 80,
            "state": "active",
            "weight": 1,
        }
    drained = json.dumps({"address": "10.0.0.11", "port": 80, "weight": 5, "state": "draining"})
    sim.admin.put(sim.keys.backend("node2"), drained)
    sim.add("node2")  # an agent restart must not re-register over the operator's drain
    sim.run(1.0)
    assert backend(sim, "node2")["state"] == "draining"
    assert backend(sim, "node2")["weight"] == 5
    view = sim.agents["node1"].view
    assert view is not None and view.backends["node2"].state == "draining"


def test_no_backend_configured_registers_nothing():
    sim = Sim()
    sim.run(1.0)
    assert sim.admin.get_prefix(sim.keys.backends_prefix()) == {}
