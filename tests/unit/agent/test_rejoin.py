"""A node that restarts registers only once its etcd member has rejoined the quorum."""

from __future__ import annotations

from .agentsim import Sim

WAITING = "waiting for this node's etcd member to rejoin before registering"
ENDPOINT = "http://127.0.0.1:2379"  # every simulated agent's first (own) endpoint


def _members(sim: Sim) -> set[str]:
    return {k.rsplit("/", 1)[1] for k in sim.backend.dump() if "/members/" in k}


def _restart_behind(sim: Sim) -> tuple[str, str]:
    """Run to a holder, crash a standby, let its lease lapse, restart it while its etcd
    member has not caught up yet. Returns (holder, restarted)."""
    sim.run(1.0)
    holder = sim.vip_on()[0]
    restarted = next(n for n in sim.nodes if n != holder)
    sim.crash(restarted)
    sim.run(5.0)  # a standby's idle lease lasts 4 s
    assert restarted not in _members(sim)
    sim.backend.members_behind.add(ENDPOINT)
    sim.add(restarted)
    return holder, restarted


def test_registers_after_its_member_rejoined_and_takes_nothing_back() -> None:
    sim = Sim(settings={"etcd_member": True})
    holder, restarted = _restart_behind(sim)
    sim.run(3.0)
    assert restarted not in _members(sim)
    assert sim.last(restarted) == WAITING
    assert sim.vip_on() == [holder]

    sim.backend.members_behind.clear()
    sim.run(0.5)
    assert restarted in _members(sim)
    assert sim.last(restarted) == f"web is held by {holder}, standing by"
    assert sim.vip_on() == [holder]  # sticky


def test_a_member_that_never_rejoins_delays_registration_only_so_long() -> None:
    sim = Sim(settings={"etcd_member": True, "member_rejoin_wait": 5.0})
    holder, restarted = _restart_behind(sim)
    sim.run(4.5)
    assert restarted not in _members(sim)
    sim.run(1.0)
    assert restarted in _members(sim)
    assert sim.vip_on() == [holder]


def test_a_node_without_a_member_registers_at_once() -> None:
    sim = Sim()  # etcd_member False: the node's endpoints are all remote
    _holder, restarted = _restart_behind(sim)
    sim.run(0.5)
    assert restarted in _members(sim)
    assert WAITING not in sim.sentences(restarted)
