"""Elections, holder death, stickiness and preferred nodes."""

from __future__ import annotations

from .agentsim import VIP, Sim, web_group


def test_exactly_one_holder(sim: Sim) -> None:
    sim.run(1.0)
    assert len(sim.vip_on()) == 1
    holder = sim.vip_on()[0]
    assert sim.leader() == holder
    assert sim.nginx_on() == [holder]
    assert f"acquired web on {holder}" in sim.sentences(holder)
    assert sim.last(holder) == "renewed lease, holding web"
    for node in sim.nodes:
        if node != holder:
            assert sim.last(node) == f"web is held by {holder}, standing by"
    # Started in order (VIP first), with gratuitous ARP for the VIP.
    commands = [c for _, c in sim.fake[holder].log if "show" not in c and "is-active" not in c]
    assert commands[:2] == ["ip addr add 10.0.0.100/24 dev eth0", "systemctl start nginx.service"]
    assert [a[1:] for a in sim.arps] == [(holder, "10.0.0.100")]
    # Members are registered, bound to their leases.
    members = [k for k in sim.backend.dump() if "/members/" in k]
    assert len(members) == 3


def test_holder_death_moves_group_after_lease_expiry(sim: Sim) -> None:
    sim.run(1.0)
    old = sim.vip_on()[0]
    lease = sim.agents[old].lease.lease_id
    assert lease is not None
    expiry = sim.backend.lease_expiry(lease)
    assert expiry is not None
    crashed_at = sim.clock.now()
    sim.crash(old)
    took = sim.run_until(lambda: len(sim.vip_on()) == 1, timeout=3.0)
    new = sim.vip_on()[0]
    assert new != old
    acquired_at = sim.clock.now()
    assert acquired_at >= expiry  # nobody starts before the old lease is gone
    assert took <= 1.0 + 0.1 + 1e-6  # ttl + one loop interval at most
    assert acquired_at - crashed_at > 0
    assert f"acquired web on {new}" in sim.sentences(new)


def test_stickiness_returning_node_does_not_preempt(sim: Sim) -> None:
    sim.run(1.0)
    old = sim.vip_on()[0]
    sim.crash(old)
    sim.run(2.0)
    new = sim.vip_on()[0]
    sim.add(old)  # the node comes back with a fresh agent
    sim.run(2.0)
    assert sim.vip_on() == [new]
    assert sim.last(old) == f"web is held by {new}, standing by"


def test_preferred_node_wins_a_free_group() -> None:
    sim = Sim(group=web_group(preferred=("node3",)))
    sim.run(1.0)
    assert sim.vip_on() == ["node3"]
    # node1 and node2 saw node3 registered before the group was taken, or saw it held.
    sim.crash("node3")
    sim.run(2.0)
    assert len(sim.vip_on()) == 1  # with the preferred node gone, the others take over


def test_etcd_like_lease_expiry_granularity() -> None:
    sim = Sim(granularity=0.5)  # etcd's lessor checks every ~0.5 s
    sim.run(1.0)
    old = sim.vip_on()[0]
    sim.crash(old)
    took = sim.run_until(lambda: len(sim.vip_on()) == 1, timeout=3.0)
    assert took <= 1.0 + 0.5 + 0.1 + 1e-6
    assert VIP in sim.fake[sim.vip_on()[0]].addresses


def test_slow_node_does_not_take_a_group_its_lease_cannot_keep(sim: Sim) -> None:
    sim.run(1.0)
    old = sim.vip_on()[0]
    slow, fast = [n for n in sim.nodes if n != old]
    sim.stores[slow].latency = 0.2  # renew + read eat 0.4 s of its 0.6 s deadline
    sim.crash(old)
    sim.run_until(lambda: len(sim.vip_on()) == 1, timeout=3.0)
    sim.run(1.0)
    assert sim.vip_on() == [fast]
    said = sim.sentences(slow)
    # an idle node sees it before switching to a fast lease, a fast one after renewing
    assert any("web is free but store calls are slow" in s for s in said) or (
        "web is free but our lease is about to lapse, renewing first" in said
    )
    assert not [s for s in said if "acquired" in s or "fencing" in s]


def test_moderately_slow_node_still_takes_a_free_group(sim: Sim) -> None:
    sim.run(1.0)
    old = sim.vip_on()[0]
    for node in sim.nodes:
        sim.stores[node].latency = 0.08
    sim.crash(old)
    sim.run_until(lambda: len(sim.vip_on()) == 1, timeout=3.0)
    sim.run(2.0)
    (new,) = sim.vip_on()
    assert sim.last(new) == "renewed lease, holding web"
    assert not [s for s in sim.sentences(new) if "fencing" in s]
