"""Idle and fast leases (agent/member.py, config.py): a node that holds nothing renews a
4 s lease every 1.3 s without the quorum read; it takes a 1 s lease before it takes a group,
so failover is as fast as with every node on a fast lease, and no member key ever vanishes
on a switch."""

from __future__ import annotations

from collections.abc import Mapping

from clusterctl.agent.ha import Agent

from .agentsim import Sim


def _renewals(sim: Sim, node: str, since: float) -> list[bool]:
    return [confirmed for when, confirmed in sim.stores[node].renewals if when >= since]


def _members_all_there(sim: Sim) -> None:
    members = {k.rsplit("/", 1)[1] for k in sim.backend.dump() if "/members/" in k}
    registered = {n for n in sim.live() if sim.agents[n].lease.lease_id is not None}
    assert registered <= members, f"member keys gone: {registered - members}"


def _reaction(sim: Sim) -> float:
    """From the crashed holder's leader key vanishing to the VIP up on another node (the
    part of a failover a standby's lease kind could change)."""
    sim.run(7.0)
    old = sim.vip_on()[0]
    sim.crash(old)
    last_renewal = sim.agents[old].lease.last_renewal
    assert last_renewal is not None
    expiry = last_renewal + sim.agents[old].config.lease_ttl  # the simulated store's lessor
    sim.run_until(lambda: len(sim.vip_on()) == 1, timeout=5.0, dt=0.001)
    return sim.clock.now() - expiry


def test_standbys_renew_idle_leases_rarely_and_unconfirmed_the_holder_fast_ones() -> None:
    sim = Sim()
    sim.run(7.0)  # past the first holder's linger: the others are idle
    (holder,) = sim.vip_on()
    since = sim.clock.now()
    sim.run(10.0)
    held = _renewals(sim, holder, since)
    assert len(held) >= 90 and all(held)  # every 0.1 s, each confirmed
    for node in set(sim.nodes) - {holder}:
        idle = _renewals(sim, node, since)
        assert 6 <= len(idle) <= 9 and not any(idle), (node, idle)
        assert not sim.agents[node].lease.fast


def test_failover_from_an_idle_standby_is_as_fast_as_from_a_fast_one() -> None:
    # within one poll either way: the switch to a fast lease costs two calls, no wait
    loop = Sim().config("node1").loop_interval
    for sim in (Sim(), Sim(settings={"idle_lease_ttl": 1.0})):
        assert _reaction(sim) <= loop + 0.002


def test_a_new_holder_holds_under_a_fast_lease_and_nothing_waits_on_the_idle_one() -> None:
    sim = Sim(invariants=[])
    sim.invariants.append(lambda: _members_all_there(sim))
    sim.run(7.0)
    old = sim.vip_on()[0]
    sim.crash(old)
    sim.run_until(lambda: len(sim.vip_on()) == 1, timeout=5.0)
    sim.run(0.5)
    (new,) = sim.vip_on()
    agent = sim.agents[new]
    assert agent.lease.fast and agent.lease.deadline is not None
    # the replaced idle lease was revoked: one lease per live node (its member key's)
    live_leases = {sim.agents[n].lease.lease_id for n in sim.live()}
    assert set(sim.backend._leases) == live_leases


def test_a_holder_that_let_go_goes_idle_after_the_linger_without_vanishing() -> None:
    sim = Sim(invariants=[])
    sim.invariants.append(lambda: _members_all_there(sim))
    sim.run(2.0)
    old = sim.vip_on()[0]
    sim.admin.put(sim.keys.standby(old), "operator")
    sim.run_until(lambda: sim.vip_on() not in ([], [old]), timeout=3.0)
    assert sim.agents[old].lease.fast  # lingers: a move back costs no grant
    linger = sim.agents[old].config.fast_lease_linger
    sim.run(linger + 0.5)
    assert not sim.agents[old].lease.fast


class ServingReader:
    """The store's state, said to come from a copy changes keep current."""

    serving = True

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def read(self, timeout: float, current: bool = False) -> Mapping[str, str]:
        keys = self.agent.keys
        return self.agent.store.get_range(keys.root, keys.state_end, timeout=timeout)


def _woken_by_changes(node: str, agent: Agent) -> None:
    agent.state_reader = ServingReader(agent)
    agent.woken_by_changes = True


def test_a_quiet_idle_node_sleeps_until_its_renewal_a_holder_does_not() -> None:
    sim = Sim(wire=_woken_by_changes)
    sim.run(7.0)
    (holder,) = sim.vip_on()
    idle = next(n for n in sim.nodes if n != holder)
    now = sim.clock.now()
    sim.step(idle)
    assert sim.agents[idle].next_wakeup() > now + 0.5  # its renewal, not the next tick
    assert sim.agents[holder].next_wakeup() <= now + sim.agents[holder].config.loop_interval
    sim.crash(holder)
    sim.run_until(lambda: len(sim.vip_on()) == 1, timeout=5.0)
    (new,) = sim.vip_on()
    other = next(n for n in sim.nodes if n not in (holder, new))
    assert sim.agents[new].next_wakeup() <= sim.clock.now() + 0.1  # a holder polls
    assert sim.agents[other].lease.fast is False


def test_only_other_nodes_registering_wakes_nobody(sim: Sim) -> None:
    agent, keys = sim.agents["node1"], sim.keys
    assert not agent.woken_by((keys.member("node2"), keys.member("node3")))
    assert agent.woken_by((keys.member("node2"), keys.leader("web")))
    assert agent.woken_by((keys.member("node1"),))  # its own: re-registered, or gone
    assert agent.woken_by(None)  # the whole range read again: anything may have changed
