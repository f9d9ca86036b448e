"""Persistent standby (``standby/<node>``) and the start-up cleanup."""

from __future__ import annotations

import json
from collections.abc import Sequence

from clusterctl.agent import admin
from clusterctl.agent.resources.runner import CommandResult

from .agentsim import VIP, FakeNode, Sim, holder


def member_standby(sim: Sim, node: str) -> bool:
    return json.loads(sim.backend.dump()[sim.keys.member(node)])["standby"]


def test_standby_key_moves_the_group_and_unstandby_does_not_pull_it_back(sim: Sim) -> None:
    node = holder(sim)
    assert admin.set_standby(sim.admin, sim.keys, node, True)
    sim.run(0.5)
    assert f"{node} is in standby: stopped web, released it" in sim.sentences(node)
    (new,) = sim.vip_on()
    assert new != node and sim.nginx_on() == [new]
    assert member_standby(sim, node) and sim.agents[node].snapshot.standby
    assert not member_standby(sim, new)
    # Out of standby: the group stays where it is (stickiness), nothing runs on node.
    assert admin.set_standby(sim.admin, sim.keys, node, False)
    sim.run(2.0)
    assert sim.vip_on() == [new] and sim.nginx_on() == [new]
    assert not member_standby(sim, node) and not sim.agents[node].snapshot.standby
    assert sim.last(node) == f"web is held by {new}, standing by"


def test_standby_survives_an_agent_restart() -> None:
    sim = Sim()
    for node in ("node1", "node2"):
        admin.set_standby(sim.admin, sim.keys, node, True)
    sim.run(1.0)
    assert sim.vip_on() == ["node3"]
    sim.crash("node1")
    sim.add("node1")  # a fresh agent: the key, not its memory, keeps it in standby
    sim.crash("node3")
    sim.run(2.0)
    assert sim.vip_on() == []
    assert sim.last("node1") == "web is free but node1 is in standby, standing by"
    assert member_standby(sim, "node1")
    admin.set_standby(sim.admin, sim.keys, "node1", False)
    sim.run(0.5)
    assert sim.vip_on() == ["node1"]


def test_local_standby_holds_without_the_key(sim: Sim) -> None:
    node = holder(sim)
    sim.agents[node].set_standby(True)
    admin.set_standby(sim.admin, sim.keys, node, True)
    sim.run(0.5)
    admin.set_standby(sim.admin, sim.keys, node, False)  # the config (local) still says so
    sim.run(0.5)
    assert member_standby(sim, node) and node not in sim.vip_on()
    assert not admin.set_standby(sim.admin, sim.keys, node, False)  # nothing to delete


# -- start-up cleanup ------------------------------------------------------------------------


class StubbornNode(FakeNode):
    """A node whose ``systemctl stop`` fails."""

    def run(self, argv: Sequence[str], timeout: float, stdin: str | None = None) -> CommandResult:
        if list(argv[:2]) == ["systemctl", "stop"]:
            self.log.append((self.clock.now(), " ".join(argv)))
            return CommandResult(1, "", "Failed to stop nginx.service: Access denied")
        return super().run(argv, timeout)


def test_startup_cleanup_stops_what_a_previous_run_left(sim: Sim) -> None:
    fake = sim.fake["node1"]
    fake.addresses.add(VIP)
    fake.units.add("nginx.service")
    agent = sim.agents["node1"]
    assert agent.startup_cleanup() == (
        "start-up cleanup: removed VIP 10.0.0.100, stopped nginx.service"
    )
    assert fake.addresses == set() and fake.units == set()
    commands = [c for _, c in fake.log if "show" not in c and "is-active" not in c]
    # the hand-over forwarding table of an interrupted planned move goes first
    assert commands == [
        "nft -f -",
        "ip addr del 10.0.0.100/24 dev eth0",
        "systemctl stop nginx.service",
    ]
    assert agent.holding() == [] and sim.backend.dump() == {}  # no store access at all
    assert agent.startup_cleanup() == "start-up cleanup: nothing was running"


def test_startup_cleanup_reports_failures_and_goes_on(sim: Sim) -> None:
    fake = StubbornNode("node1", sim.clock)
    sim.fake["node1"] = fake
    for res in sim.agents["node1"].groups["web"].resources:
        res.runner = fake
    fake.addresses.add(VIP)
    fake.units.add("nginx.service")
    sentence = sim.agents["node1"].startup_cleanup()
    assert sentence.startswith("start-up cleanup: removed VIP 10.0.0.100, failed to stop ")
    assert "nginx.service (systemctl stop nginx.service failed (rc 1) Failed to stop" in sentence
    assert fake.addresses == set()
