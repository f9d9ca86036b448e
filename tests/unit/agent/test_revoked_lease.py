"""A holder's lease revoked before it could expire (etcd 3.4's stale leader, agent/peers.py):
the holder takes its group back, standbys that heard its word wait for it, and a real
failover is not delayed by any of it."""

from __future__ import annotations

from typing import Any

import pytest

from clusterctl.agent.clock import FakeClock
from clusterctl.agent.peers import PeerWatch, parse_word

from .agentsim import VIP, Sim, holder

TAKEN_BACK = "lease revoked before it could expire: took web back with a new lease"
ADD_VIP = "ip addr add 10.0.0.100/24 dev eth0"


def _revoke(sim: Sim, *nodes: str) -> None:
    """What a resuming stale etcd leader does: revoke leases that are being renewed."""
    for node in nodes:
        lease = sim.agents[node].lease.lease_id
        assert lease is not None
        sim.admin.revoke(lease)


def _vip_adds(sim: Sim, since: float) -> list[tuple[float, str]]:
    return sorted((t, n) for n in sim.nodes for t in sim.fake[n].times(ADD_VIP) if t >= since)


def test_a_revoked_holder_takes_its_group_back_and_nothing_moves(sim: Sim) -> None:
    node = holder(sim)
    began = sim.clock.now()
    _revoke(sim, node)
    sim.run(2.0)  # Sim.check after every step: never two VIP holders
    assert TAKEN_BACK in sim.sentences(node)
    assert sim.vip_on() == [node] and sim.leader() == node
    assert _vip_adds(sim, began) == []  # the VIP never started anywhere else
    assert "systemctl stop nginx.service" not in [c for _, c in sim.fake[node].log]
    assert [e.event for e in sim.agents[node].history.pending()][-1] == "retaken"
    assert sim.last(node) == "renewed lease, holding web"


def test_leases_revoked_together_are_all_taken_back(sim: Sim) -> None:
    """The stale leader revokes every lease it thinks expired: the holder's and a standby's."""
    node = holder(sim)
    other = next(n for n in sim.nodes if n != node)
    began = sim.clock.now()
    _revoke(sim, node, other)
    sim.run(2.0)
    assert TAKEN_BACK in sim.sentences(node)
    assert "lease expired, registering again" in sim.sentences(other)
    assert sim.vip_on() == [node] and _vip_adds(sim, began) == []


def test_a_group_taken_meanwhile_makes_the_revoked_holder_fence(sim: Sim) -> None:
    node = holder(sim)
    other = next(n for n in sim.nodes if n != node)
    _revoke(sim, node)
    other_lease = sim.agents[other].lease.lease_id
    assert sim.admin.create_if_absent(sim.keys.leader("web"), other, other_lease)
    sentence = sim.step(node)  # before anyone else steps: Sim.check sees a fenced holder
    assert sentence == "lease revoked and web taken by another node, fencing: stopped web"
    assert VIP not in sim.fake[node].addresses


def test_a_standby_waits_for_the_holder_it_heard_from_until_its_lease_could_expire(
    sim: Sim,
) -> None:
    """The holder is frozen right after its lease was revoked, so it cannot take the group
    back: the standby takes it once the lease could have expired, and not before the
    holder's deadline has passed."""
    node = holder(sim)
    deadline = sim.agents[node].lease.deadline
    assert deadline is not None
    _revoke(sim, node)
    sim.freeze(node)
    began = sim.clock.now()
    sim.run(2.0)
    (first, taker), *_ = _vip_adds(sim, began)
    assert taker != node
    assert deadline < first <= deadline + 0.4 + 0.2 + 0.1  # + margin, a word's age, a tick
    said = [s for n in sim.nodes for s in sim.sentences(n)]
    assert any(f"asking {node} whether it still holds web" in s for s in said)
    assert any(f"{node} does not answer, waiting" in s for s in said)


def test_without_the_holders_word_a_revoked_holder_loses_its_group_safely() -> None:
    """No word (the API down): today's behaviour, never two holders."""
    sim = Sim(peer_words=False)
    node = holder(sim)
    _revoke(sim, node)
    sim.run(2.0)
    assert len(sim.vip_on()) == 1


@pytest.mark.parametrize("fault", ["crash", "freeze"])
def test_the_holders_word_never_delays_a_real_failover(fault: str) -> None:
    taken: dict[bool, float] = {}
    for words in (True, False):
        sim = Sim(peer_words=words)
        node = holder(sim)
        began = sim.clock.now()
        getattr(sim, fault)(node)
        sim.run(3.0)
        (first, taker), *_ = _vip_adds(sim, began)
        assert taker != node
        taken[words] = first - began
    assert taken[True] == pytest.approx(taken[False])


# -- PeerWatch -------------------------------------------------------------------------------


def _answer(node: str, left: float = 0.5, holding: tuple[str, ...] = ("web",)) -> dict:
    return {"node": node, "lease_valid": True, "lease_time_left": left, "holding": list(holding)}


def test_a_word_counts_from_when_it_was_asked() -> None:
    word = parse_word("node2", _answer("node2", 0.5), asked_at=10.0)
    assert word is not None and word.deadline == 10.5 and word.holding == ("web",)
    assert parse_word("node2", _answer("node3"), 10.0) is None  # another node answered
    assert parse_word("node2", {"node": "node2"}, 10.0) is None
    invalid = parse_word("node2", {**_answer("node2"), "lease_valid": False}, 10.0)
    assert invalid is not None and invalid.holding == () and invalid.deadline == 10.0


class _Refused(Exception):
    refused = True


def test_peer_watch_keeps_the_last_word_of_a_silent_peer_and_drops_a_refusing_ones() -> None:
    clock = FakeClock()
    targets = {"node2": "10.0.0.12", "node3": "bad host"}
    answers: dict[str, Any] = {"10.0.0.12": _answer("node2", 0.6)}
    asked: list[str] = []

    def ask(address: str, timeout: float) -> Any:
        asked.append(address)
        answer = answers[address]
        if isinstance(answer, Exception):
            raise answer
        return answer

    watch = PeerWatch(lambda: dict(targets), ask, clock, interval=0.2)
    watch.poll()
    first = watch.latest("node2")
    assert first is not None and first.deadline == pytest.approx(clock.now() + 0.6)
    assert asked == ["10.0.0.12"]  # a member address that is not an IP is never asked
    clock.advance(0.2)
    answers["10.0.0.12"] = OSError("timed out")
    watch.poll()
    assert watch.latest("node2") == first  # no answer: the old word stays, and ages
    answers["10.0.0.12"] = _Refused("connection refused")
    watch.poll()
    assert watch.latest("node2") is None  # no agent listens there: it holds nothing
    answers["10.0.0.12"] = _answer("node2")
    watch.poll()
    assert watch.latest("node2") is not None
    del targets["node2"]
    watch.poll()
    assert watch.latest("node2") is None and watch.latest("node3") is None


def test_health_tells_which_groups_run_here(sim: Sim) -> None:
    import json

    from clusterctl.agent.api import Api

    node = holder(sim)
    other = next(n for n in sim.nodes if n != node)
    body = json.loads(Api(sim.agents[node], "t").health().body)
    assert body["holding"] == ["web"] and body["lease_valid"] is True
    assert json.loads(Api(sim.agents[other], "t").health().body)["holding"] == []
    assert VIP in sim.fake[node].addresses


def test_a_standby_thawed_with_its_idle_lease_alive_holds_off_for_its_stall(sim: Sim) -> None:
    """Seen on real nodes: the etcd leader's node frozen 3 s; its agent, a standby, thaws
    with its idle (4 s) lease still valid, as its etcd revokes the holder's lease on resuming.
    It read the holder's member key back while the group was still free, took that for a
    clean release and started the VIP during the holder's retake. A thawed node holds off."""
    sim.run(7.0)  # the standbys are idle by now
    node = holder(sim)
    frozen = next(n for n in sim.nodes if n != node)
    assert not sim.agents[frozen].lease.fast
    sim.freeze(frozen)
    sim.run(2.0)  # its lease, renewed at most 1.3 s before, outlives this
    began = sim.clock.now()
    _revoke(sim, node)
    # the holder's member key back, its leader key not yet: what a retake looked like midway
    lease = sim.admin.grant_lease(1.0)
    member = sim.agents[node].lease.member_value(False)
    sim.admin.put(sim.keys.member(node), member, lease)
    said = sim.thaw(frozen)  # Sim.check after every step: never two VIP holders
    assert "acquired" not in said
    sim.run(2.0)
    assert sim.vip_on() == [node] and _vip_adds(sim, began) == []
    assert TAKEN_BACK in sim.sentences(node)


def test_a_retaking_holder_writes_its_leader_key_before_its_member_key(sim: Sim) -> None:
    node = holder(sim)
    store = sim.stores[node]
    writes: list[str] = []
    put, create = store.put, store.create_if_absent
    store.put = lambda key, *a, **k: writes.append(key) or put(key, *a, **k)  # type: ignore[method-assign]
    store.create_if_absent = (  # type: ignore[method-assign]
        lambda key, *a, **k: writes.append(key) or create(key, *a, **k)
    )
    _revoke(sim, node)
    sim.run(0.5)
    assert TAKEN_BACK in sim.sentences(node)
    leader, member = sim.keys.leader("web"), sim.keys.member(node)
    assert writes.index(leader) < writes.index(member), writes
