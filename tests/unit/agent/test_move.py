"""Planned moves: make-before-break for prestart_safe resources only."""

from __future__ import annotations

from clusterctl.agent import admin
from clusterctl.agent.config import ResourceSpec

from .agentsim import Sim, holder, web_group


def test_move_prestarts_stateless_service_then_hands_over(sim: Sim) -> None:
    node = holder(sim)
    target = next(n for n in sim.nodes if n != node)
    bystander = next(n for n in sim.nodes if n not in (node, target))
    admin.request_move(sim.admin, sim.keys, "web", target)
    seen_both = False
    while sim.vip_on() != [target]:
        sim.run(0.05)
        # Make-before-break: nginx runs on both for a while, the VIP never does (Sim.check).
        seen_both |= sorted(sim.nginx_on()) == sorted([node, target])
        assert bystander not in sim.vip_on() and bystander not in sim.nginx_on()
        assert sim.clock.now() - sim.start < 5
    assert seen_both
    assert f"pre-started nginx for the move of web from {node}" in sim.sentences(target)
    assert f"moving web to {target}: stopped web, released it" in sim.sentences(node)
    assert f"acquired web on {target}" in sim.sentences(target)
    # The target's VIP came after the holder's VIP was gone (same simulated instant at most:
    # the fake clock stands still within a tick; Sim.check ran between the two steps).
    (dropped,) = sim.fake[node].times("ip addr del 10.0.0.100/24 dev eth0")
    (added,) = sim.fake[target].times("ip addr add 10.0.0.100/24 dev eth0")
    assert dropped <= added
    sim.run(0.5)
    dump = sim.backend.dump()
    assert sim.keys.move("web") not in dump and sim.keys.prestarted("web") not in dump
    assert sim.nginx_on() == [target]
    assert sim.last(node) == f"web is held by {target}, standing by"


def test_move_of_exclusive_only_group_is_break_before_make() -> None:
    vip_only = web_group(
        resources=(
            ResourceSpec(
                "vip", "vip", {"address": "10.0.0.100", "prefix": 24, "interface": "eth0"}
            ),
        )
    )
    sim = Sim(group=vip_only)
    node = holder(sim)
    target = next(n for n in sim.nodes if n != node)
    admin.request_move(sim.admin, sim.keys, "web", target)
    sim.run(0.5)
    assert sim.vip_on() == [target]
    assert not any(s.startswith("pre-started") for s in sim.sentences(target))
    # Only the target could acquire while the move was pending.
    others = [n for n in sim.nodes if n not in (node, target)]
    for n in others:
        assert f"acquired web on {n}" not in sim.sentences(n)


def test_move_to_ineligible_target_is_put_on_hold(sim: Sim) -> None:
    node = holder(sim)
    admin.request_move(sim.admin, sim.keys, "web", "node9")
    sim.run(0.5)
    assert sim.vip_on() == [node]
    assert sim.last(node) == "move of web to node9 on hold: it is not an eligible member"


def test_cancelled_move_stops_prestarted_service(sim: Sim) -> None:
    node = holder(sim)
    target = next(n for n in sim.nodes if n != node)
    # Freeze the holder so the hand-over cannot complete, then cancel the move.
    admin.request_move(sim.admin, sim.keys, "web", target)
    sim.freeze(node)
    sim.run(0.15)
    assert target in sim.nginx_on()
    admin.cancel_move(sim.admin, sim.keys, "web")
    sim.thaw(node)
    sim.run(0.2)
    assert "move of web cancelled: stopped pre-started nginx" in sim.sentences(target)
    assert sim.nginx_on() == [node] and sim.vip_on() == [node]
    assert sim.keys.prestarted("web") not in sim.backend.dump()


def test_move_key_expires_with_its_lease(sim: Sim) -> None:
    node = holder(sim)
    admin.request_move(sim.admin, sim.keys, "web", "node9", ttl=1.0)
    sim.run(1.5)
    assert sim.keys.move("web") not in sim.backend.dump()
    assert sim.last(node) == "renewed lease, holding web"


def test_handover_drops_the_vip_before_the_local_service_and_target_polls_fast(sim: Sim) -> None:
    # On real nodes, stopping nginx before the VIP made clients of the VIP see "connection
    # refused" during a planned move, and the target's 0.1 s poll left the VIP unserved.
    node = holder(sim)
    target = next(n for n in sim.nodes if n != node)
    admin.request_move(sim.admin, sim.keys, "web", target)
    fast_poll = False
    while sim.vip_on() != [target]:
        sim.run(0.01)
        agent = sim.agents[target]
        fast_poll |= agent.next_wakeup() - agent.clock.now() <= 0.011
        assert sim.clock.now() - sim.start < 5
    assert fast_poll
    log = [c for _, c in sim.fake[node].log if c.startswith(("ip addr del", "systemctl stop"))]
    assert log[:2] == ["ip addr del 10.0.0.100/24 dev eth0", "systemctl stop nginx.service"]
    sim.run(0.5)
    agent = sim.agents[target]
    assert agent.next_wakeup() - agent.clock.now() > 0.05  # move done: normal pace again


def _settled_then_moved(sim: Sim) -> tuple[str, str]:
    """Let ``sim`` settle, move web away from its holder; (old holder, new holder)."""
    from clusterctl.agent import admin

    sim.run(2.0)
    (old,) = sim.vip_on()
    target = next(n for n in sim.nodes if n != old)
    admin.request_move(sim.admin, sim.keys, "web", target)
    sim.run(1.0)
    return old, target


def test_planned_move_forwards_the_vip_to_the_target_during_the_hand_over():
    from clusterctl.agent.handover import HOLD_SECONDS, TABLE

    sim = Sim(addresses=True)
    old, target = _settled_then_moved(sim)
    assert sim.vip_on() == [target]
    scripts = sim.fake[old].nft_scripts
    address = f"10.0.0.{11 + list(sim.nodes).index(target)}"
    assert scripts and f"dnat to {address};" in scripts[0] and TABLE in scripts[0]
    sim.run(HOLD_SECONDS + 0.5)
    assert scripts[-1].strip().endswith(f"delete table ip {TABLE}")


def test_moving_back_at_once_drops_the_old_forwarding_first():
    from clusterctl.agent import admin
    from clusterctl.agent.handover import TABLE

    sim = Sim(addresses=True)
    first, second = _settled_then_moved(sim)
    admin.request_move(sim.admin, sim.keys, "web", first)
    sim.run(1.0)  # well within the first hand-over's hold time
    assert sim.vip_on() == [first]
    assert sim.fake[first].nft_scripts[-1].strip().endswith(f"delete table ip {TABLE}")
