"""Monitors, fail counts, migration threshold, bans, standby and cleanup."""

from __future__ import annotations

import json

from clusterctl.agent import admin

from .agentsim import Sim, holder, web_group


def failcount(sim: Sim, node: str) -> str | None:
    return sim.backend.dump().get(sim.keys.failcount("web", node))


def test_failed_resource_is_restarted_in_place(sim: Sim) -> None:
    node = holder(sim)
    sim.fake[node].units.discard("nginx.service")  # nginx crashes
    sim.run(1.1)  # the group's monitor_interval is 1 s
    assert "nginx failed, restarted in place (failcount 1/3)" in sim.sentences(node)
    assert sim.nginx_on() == [node]
    assert sim.vip_on() == [node]
    assert failcount(sim, node) == "1"
    # Only nginx was restarted: the VIP (before it in start order) was left alone.
    assert len(sim.fake[node].times("ip addr del 10.0.0.100/24 dev eth0")) == 0


def test_failed_vip_restarts_everything_after_it(sim: Sim) -> None:
    node = holder(sim)
    sim.fake[node].addresses.clear()
    sim.run(1.1)
    assert "vip failed, restarted in place (failcount 1/3)" in sim.sentences(node)
    assert sim.fake[node].times("systemctl stop nginx.service")  # dependents restarted too
    assert sim.vip_on() == [node] and sim.nginx_on() == [node]


def test_migration_threshold_moves_group_and_node_becomes_ineligible(sim: Sim) -> None:
    node = holder(sim)
    for _ in range(3):
        sim.fake[node].units.discard("nginx.service")
        sim.run(1.05)
    assert "nginx failed (3/3 failures): stopped web, released it" in sim.sentences(node)
    sim.run(0.5)
    (new,) = sim.vip_on()
    assert new != node
    assert sim.nginx_on() == [new]
    # The failed node does not come back even when the new holder dies.
    third = next(n for n in sim.nodes if n not in (node, new))
    sim.crash(new)
    sim.run(2.0)
    assert sim.vip_on() == [third]
    # Now the last one dies: the failed node still refuses until cleaned up.
    sim.crash(third)
    sim.run(2.0)
    assert sim.vip_on() == []
    assert sim.last(node) == (
        f"web is free but {node} reached web's migration threshold (3 failures), standing by"
    )
    assert admin.cleanup(sim.admin, sim.keys, "web").startswith("cleared 1 fail count(s)")
    sim.run(0.5)
    assert sim.vip_on() == [node]


def test_start_failure_is_fatal_on_that_node(sim: Sim) -> None:
    for node in ("node1", "node2"):
        sim.fake[node].fail_start.add("nginx.service")
    sim.run(2.0)
    assert sim.vip_on() == ["node3"]
    failed = [n for n in ("node1", "node2") if failcount(sim, n) == "3"]
    assert failed  # whoever tried first recorded a fatal failure and released
    for node in failed:
        assert any(s.startswith("failed to start web (nginx:") for s in sim.sentences(node))
        assert sim.fake[node].addresses == set()  # the VIP was stopped again


def test_banned_node_never_acquires() -> None:
    sim = Sim(group=web_group(bans=("node1", "node2")))
    sim.run(1.0)
    assert sim.vip_on() == ["node3"]
    sim.crash("node3")
    sim.run(3.0)
    assert sim.vip_on() == []
    assert sim.last("node1") == "web is free but node1 is banned from web, standing by"


def test_ban_in_the_spec_key_makes_the_holder_leave(sim: Sim) -> None:
    node = holder(sim)
    admin.set_bans(sim.admin, sim.keys, "web", [node])
    sim.run(0.5)
    assert f"{node} is banned from web: stopped web, released it" in sim.sentences(node)
    (new,) = sim.vip_on()
    assert new != node
    assert "bans (" + node + ")" in admin.cleanup(sim.admin, sim.keys, "web")
    sim.crash(new)
    sim.run(2.0)
    assert len(sim.vip_on()) == 1


def test_standby_releases_and_never_acquires(sim: Sim) -> None:
    node = holder(sim)
    sim.agents[node].set_standby(True)
    sim.run(0.5)
    assert f"{node} is in standby: stopped web, released it" in sim.sentences(node)
    (new,) = sim.vip_on()
    assert new != node
    others = [n for n in sim.nodes if n not in (node, new)]
    for n in others:
        sim.agents[n].set_standby(True)
    sim.crash(new)
    sim.run(2.0)
    assert sim.vip_on() == []
    assert sim.last(node) == f"web is free but {node} is in standby, standing by"
    sim.agents[node].set_standby(False)
    sim.run(0.5)
    assert sim.vip_on() == [node]


def test_snapshot_is_immutable_and_current(sim: Sim) -> None:
    node = holder(sim)
    snap = sim.agents[node].snapshot
    assert snap.sentence == "renewed lease, holding web"
    assert snap.lease_valid and snap.lease_time_left > 0
    assert snap.members == ("node1", "node2", "node3")
    (group,) = snap.groups
    assert group.leader == node and group.running_here and group.started == ("vip", "nginx")
    sim.run(0.5)
    assert sim.agents[node].snapshot is not snap


def test_shutdown_stops_releases_and_revokes(sim: Sim) -> None:
    node = holder(sim)
    sentence = sim.stop_agent(node)
    assert sentence == "shutting down: stopped web, released it, revoked lease"
    assert sim.vip_on() == [] and sim.leader() is None
    assert sim.keys.member(node) not in sim.backend.dump()
    sim.run(0.5)  # no lease expiry to wait for: another node takes over at once
    assert len(sim.vip_on()) == 1


def test_slow_restart_in_place_is_retried_within_the_grace(sim: Sim) -> None:
    # A killed unit can stay "deactivating" for a while (systemd waiting for its processes),
    # and `systemctl start` fails meanwhile: within the group's restart_grace the agent
    # retries rather than fencing or moving the group.
    node = holder(sim)
    sim.fake[node].units.discard("nginx.service")
    sim.fake[node].fail_start.add("nginx.service")
    pending = "nginx failed, restart in place pending"
    sim.run_until(lambda: any(pending in s for s in sim.sentences(node)), timeout=2.0)
    sim.run(0.3)
    assert sim.vip_on() == [node]
    sim.fake[node].fail_start.discard("nginx.service")
    sim.run(0.5)
    assert "nginx failed, restarted in place (failcount 1/3)" in sim.sentences(node)
    assert sim.vip_on() == [node] and sim.nginx_on() == [node]
    assert failcount(sim, node) == "1"


def test_restart_in_place_beyond_the_grace_moves_the_group(sim: Sim) -> None:
    # Measured on the sandbox: a SIGKILLed nginx kept its unit deactivating for 5 s (its
    # TimeoutStopSec). Waiting for it was a 5 s outage; moving the group is about 1 s.
    node = holder(sim)
    sim.fake[node].units.discard("nginx.service")
    sim.fake[node].fail_start.add("nginx.service")
    pending = "nginx failed, restart in place pending"
    sim.run_until(lambda: any(pending in s for s in sim.sentences(node)), timeout=2.0)
    began = sim.clock.now()
    took = sim.run_until(lambda: sim.vip_on() not in ([], [node]), timeout=3.0)
    assert any(s.startswith("restart of nginx failed") for s in sim.sentences(node))
    (new,) = sim.vip_on()
    assert new != node and sim.nginx_on() == [new]
    assert sim.clock.now() - began <= 1.0 + 0.5  # restart_grace + a step or two
    assert took <= 1.5
    assert failcount(sim, node) == "3"  # counted as a failed restart: no way back until cleanup


def test_a_changed_group_configuration_reaches_the_spec_key_and_bans_survive_it() -> None:
    """The spec key was written once, at the first start: an edited groups file (another
    preferred node, another threshold) never reached placement. Agents now publish their
    configuration on every start, keeping the operators' run-time bans."""
    sim = Sim(group=web_group(preferred=("node1",)))
    assert holder(sim) == "node1"
    admin.ban(sim.admin, sim.keys, "web", "node3")
    sim.group = web_group(preferred=("node2",), migration_threshold=5)
    for node in sim.nodes:  # a converge restarts every agent with the new configuration
        sim.stop_agent(node)
        sim.add(node)
    sim.run(2.0)
    spec = json.loads(sim.backend.dump()[sim.keys.spec("web")])
    assert spec["preferred"] == ["node2"] and spec["migration_threshold"] == 5
    assert spec["bans"] == ["node3"]
    assert sim.vip_on() == ["node2"]  # placed by the new preference
    for node in sim.nodes:  # a restart with the same configuration changes nothing
        sim.stop_agent(node)
        sim.add(node)
    revision = sim.backend.dump()[sim.keys.spec("web")]
    sim.run(1.0)
    assert sim.backend.dump()[sim.keys.spec("web")] == revision


def test_publishing_a_spec_that_keeps_changing_gives_up_quietly() -> None:
    """Ten lost compare-and-puts in a row end the attempt, never the agent's loop."""
    sim = Sim()
    holder(sim)
    store = sim.stores["node1"]
    store.compare_and_put = lambda *args, **kwargs: False  # type: ignore[method-assign]
    spec = {"name": "web", "preferred": ["node3"], "bans": [], "migration_threshold": 9}
    assert admin.publish_spec(store, sim.keys, spec) is False
    assert json.loads(sim.backend.dump()[sim.keys.spec("web")])["migration_threshold"] != 9


def _view_with_members(nodes: list[str]):  # noqa: ANN202 - a ClusterView
    from clusterctl.agent.keys import Keys
    from clusterctl.agent.view import parse_view

    keys = Keys("demo")
    kv = {keys.member(n): json.dumps({"address": "", "standby": False}) for n in nodes}
    return parse_view(keys, kv, (web_group(),))


def test_the_order_of_taking_a_freed_group_is_the_same_on_every_node() -> None:
    from clusterctl.agent.placement import taking_order

    nodes = [f"node{i}" for i in range(1, 9)]
    view = _view_with_members(nodes)
    order = taking_order(view, view.groups["web"])
    assert sorted(order) == nodes  # every eligible member has its turn
    assert taking_order(_view_with_members(nodes[::-1]), view.groups["web"]) == order
    assert order[:3] != sorted(order)[:3] or order != sorted(order)  # a hash, not names
    small = _view_with_members(nodes[:3])
    assert sorted(taking_order(small, small.groups["web"])) == nodes[:3]


def test_only_the_first_takers_take_a_freed_group_the_others_after_a_moment() -> None:
    sim = Sim(nodes=tuple(f"node{i}" for i in range(1, 9)))
    sim.run(2.0)
    old = holder(sim)
    sim.crash(old)
    sim.run_until(lambda: len(sim.vip_on()) == 1, timeout=5.0)
    new = holder(sim)
    later = [n for n in sim.nodes if n not in (old, new)]
    leaving = [n for n in later if any("leaving it to" in s for s in sim.sentences(n))]
    assert leaving  # most of them left it to the first takers
    assert not any("acquired" in s for n in later for s in sim.sentences(n)[-20:])


def test_takers_come_in_turns_when_the_first_ones_died_too() -> None:
    """The holder and the first two turns of takers crash together (their idle member keys
    linger up to 4 s): a node of a later turn takes the group."""
    from clusterctl.agent.placement import taking_order

    sim = Sim(nodes=tuple(f"node{i}" for i in range(1, 11)))
    sim.run(7.0)  # the standbys are on idle leases
    old = holder(sim)
    view = sim.agents[old].view
    assert view is not None
    order = [n for n in taking_order(view, view.groups["web"]) if n != old]
    for node in [old, *order[:6]]:
        sim.crash(node)
    sim.run_until(lambda: len(sim.vip_on()) == 1, timeout=10.0)
    new = holder(sim)
    assert new in order[6:], (new, order)
    assert any("leaving it to" in s for s in sim.sentences(new))
