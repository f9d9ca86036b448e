"""Self-fencing: a holder that cannot renew stops before its lease can expire."""

from __future__ import annotations

import pytest

from clusterctl.agent.clock import FakeClock
from clusterctl.agent.config import AgentConfig
from clusterctl.agent.keys import Keys
from clusterctl.agent.member import MemberLease
from clusterctl.agent.store.base import StoreUnavailable
from clusterctl.agent.store.memory import MemoryBackend, MemoryStore

from .agentsim import VIP, Sim, holder

TTL, MARGIN = 1.0, 0.4  # the defaults
DEL_VIP = "ip addr del 10.0.0.100/24 dev eth0"


@pytest.mark.parametrize("hang", [False, True], ids=["refused", "hanging"])
def test_partitioned_holder_fences_before_its_lease_expires(sim: Sim, hang: bool) -> None:
    node = holder(sim)
    agent = sim.agents[node]
    lease = agent.lease.lease_id
    assert lease is not None
    sim.partition(node, hang=hang)
    # The last successful renewal is the one just before the cut.
    last_renewal = agent.lease.last_renewal
    assert last_renewal is not None
    sim.run_until(lambda: VIP not in sim.fake[node].addresses, timeout=2.0)
    (stopped_at,) = sim.fake[node].times(DEL_VIP)
    deadline = last_renewal + TTL - MARGIN
    # Each call is bounded by the time left (floor 10 ms), so fencing is never late.
    assert stopped_at <= deadline + 0.01 + 1e-9
    expiry = sim.backend.lease_expiry(lease)
    assert expiry is None or stopped_at < expiry
    # The web server is stopped too, after the VIP (exclusive first).
    assert "nginx.service" not in sim.fake[node].units
    said = sim.sentences(node)
    assert any(s.startswith("renewal failed, holding web for") for s in said)
    assert said[-1] == "renewal failed, fencing: stopped web"
    # Another node takes over only once the lease has expired in the store.
    sim.run_until(lambda: len(sim.vip_on()) == 1, timeout=3.0)
    assert sim.clock.now() >= last_renewal + TTL
    assert sim.vip_on() != [node]
    # While cut off, the fenced node stands by; healed, it stays standby (stickiness).
    sim.run(0.5)
    assert sim.last(node) == "no quorum: store unreachable, standing by"
    sim.heal(node)
    sim.run(1.0)
    assert sim.last(node).startswith("web is held by")


def test_frozen_holder_fences_first_thing_on_wake_up(sim: Sim) -> None:
    node = holder(sim)
    sim.freeze(node)
    sim.run(3.0)  # its lease expires, another node takes over (VIP on both, one frozen)
    (other,) = [n for n in sim.vip_on() if n != node]
    calls_before = sim.stores[node].calls
    log_before = len(sim.fake[node].log)
    sentence = sim.thaw(node)  # thaw() steps it at once; Sim.check() then sees one holder
    assert sentence == "lease deadline passed, fencing: stopped web"
    assert sim.stores[node].calls == calls_before  # no store call before fencing
    actions = [c for _, c in sim.fake[node].log[log_before:] if " show " not in c]
    assert actions == [DEL_VIP, "systemctl stop nginx.service"]  # the VIP goes first
    assert sim.vip_on() == [other]
    sim.run(1.0)
    assert sim.last(node) == f"web is held by {other}, standing by"


def test_short_freeze_within_deadline_keeps_the_group(sim: Sim) -> None:
    node = holder(sim)
    sim.freeze(node)
    sim.run(0.3)
    sim.thaw(node)
    sim.run(1.0)
    assert sim.vip_on() == [node]
    assert sim.last(node) == "renewed lease, holding web"


def test_no_quorum_everyone_stops_and_nobody_starts(sim: Sim) -> None:
    node = holder(sim)
    for n in sim.nodes:
        sim.partition(n)
    sim.run(2.0)
    assert sim.vip_on() == []
    assert sim.nginx_on() == []
    assert "renewal failed, fencing: stopped web" in sim.sentences(node)
    for n in sim.nodes:
        assert sim.last(n) == "no quorum: store unreachable, standing by"
    for n in sim.nodes:
        sim.heal(n)
    sim.run(2.5)
    assert len(sim.vip_on()) == 1


def test_non_holder_without_store_standing_by(sim: Sim) -> None:
    node = holder(sim)
    other = next(n for n in sim.nodes if n != node)
    sim.partition(other)
    sim.run(1.0)
    assert sim.last(other) == "no quorum: store unreachable, standing by"
    assert sim.vip_on() == [node]


def test_renewal_keeps_deadline_ahead(sim: Sim) -> None:
    node = holder(sim)
    agent = sim.agents[node]
    for _ in range(20):
        sim.run(0.1)
        deadline = agent.lease.deadline
        assert deadline is not None
        assert deadline - sim.clock.now() >= TTL - MARGIN - 0.2 - 1e-9  # renewed every 0.2 s


def test_a_holder_renews_twice_as_often_as_a_standby_and_on_time(sim: Sim) -> None:
    """The holder's last renewal is at most ``holding_renew_interval`` old when the etcd
    leader dies (config.py says why); the loop wakes for it instead of waiting for a tick."""
    node = holder(sim)
    standby = next(n for n in sim.nodes if n != node)
    renewals: dict[str, list[float]] = {node: [], standby: []}
    for _ in range(400):
        sim.run(0.005)
        for n, seen in renewals.items():
            sent = sim.agents[n].lease.last_renewal
            if sent is not None and (not seen or sent != seen[-1]):
                seen.append(sent)

    def gaps(n: str) -> list[float]:
        return [b - a for a, b in zip(renewals[n][1:], renewals[n][2:], strict=False)]

    config = sim.agents[node].config
    assert config.holding_renew_interval == 0.1 and config.renew_interval == 0.2
    assert gaps(node) and max(gaps(node)) <= 0.1 + 0.005 + 1e-9
    assert min(gaps(standby)) >= 0.2 - 1e-9


def test_unreachable_store_raises_store_unavailable(sim: Sim) -> None:
    sim.partition("node1")
    with pytest.raises(StoreUnavailable):
        sim.stores["node1"].get("/x")


class _TimeoutRecordingStore(MemoryStore):
    """Records the timeout of every renewal the lease asks for."""

    def __init__(self, backend: MemoryBackend) -> None:
        super().__init__(backend, "recording")
        self.renew_timeouts: list[float | None] = []

    def keepalive(self, lease_id: int, timeout: float | None = None, confirm: bool = True) -> float:
        self.renew_timeouts.append(timeout)
        return super().keepalive(lease_id, timeout)


def test_a_renewal_is_capped_by_the_deadline_ahead_and_gets_its_whole_timeout_past_it() -> None:
    clock = FakeClock()
    store = _TimeoutRecordingStore(MemoryBackend(clock))
    config = AgentConfig(node="node1", etcd_endpoints=("http://127.0.0.1:2379",)).validate()
    lease = MemberLease(store, Keys("c"), config, clock)
    lease.grant()
    clock.advance(config.lease_ttl - config.fence_margin - 0.05)  # 50 ms before the deadline
    lease.renew()
    clock.advance(config.lease_ttl - config.fence_margin + 0.1)  # past it (etcd still has it)
    lease.renew()
    assert store.renew_timeouts == [pytest.approx(0.05), config.renew_timeout]
