"""Faults on the real nodes of the HA cluster: the group (VIP + nginx) serves again from
another node about a second later and never runs on two nodes at once.

Each test starts from a healthy cluster with exactly one holder and heals it afterwards
(``hahelpers.heal``). Outages are printed (`pytest -s`), asserted only against generous bounds:
speed is the benchmark's business."""

from __future__ import annotations

import time

import pytest

from .conftest import cli, podman
from .hahelpers import (
    HolderSampler,
    Prober,
    container,
    heal,
    holder,
    kernel_holders,
    move_etcd_leader,
    node_exec,
    node_has_vip,
    node_names,
    partition,
    unit_active,
    unpartition,
    vip,
    vip_holders,
    wait_for,
)
from .rejoinhelpers import online

GENEROUS = 10.0  # seconds: a bound for "it happened", not a performance target


@pytest.fixture(autouse=True)
def healthy(ha_sandbox):
    """The holder of web on a healthy cluster; heals the cluster after the test."""
    yield heal(ha_sandbox)
    heal(ha_sandbox)


def scheduling(sandbox, node: str, unit: str) -> str:
    """The CPU scheduling policy of a unit's main process on a node (chrt's words)."""
    rc, out = node_exec(
        sandbox, node, "sh", "-c", f"chrt -p $(systemctl show -p MainPID --value {unit})"
    )
    return out.split("policy:")[1].split()[0].split("|")[0] if "policy:" in out else out


def test_etcd_and_the_agents_loop_run_at_real_time_priority(ha_sandbox, healthy):
    for node in node_names(ha_sandbox):
        assert scheduling(ha_sandbox, node, "etcd") == "SCHED_RR", node
        # its loop (the main thread) renews and fences at real time
        assert scheduling(ha_sandbox, node, "clusterctl-agent") == "SCHED_RR", node


def _others(sandbox, node: str) -> list[str]:
    return [n for n in node_names(sandbox) if n != node]


def test_holder_crash_fails_over_and_stays_put(ha_sandbox, healthy):
    old = healthy
    with Prober(vip(ha_sandbox)) as prober, HolderSampler(ha_sandbox) as sampler:
        prober.wait_answer(time.monotonic(), 5, node=old)
        fault = time.monotonic()
        podman("kill", container(ha_sandbox, old))
        answer = prober.wait_answer(fault, GENEROUS, exclude=old)
        time.sleep(1)
        outage = prober.outage(fault)
    print(f"\nholder crash: {old} -> {answer.node}, outage {outage:.3f} s")
    assert outage < GENEROUS
    assert vip_holders(ha_sandbox) == [answer.node]
    assert holder(ha_sandbox) == answer.node
    assert sampler.doubles() == []
    # the history says who took over and why, as `status` does
    taken = [
        e for e in cli("history", "--cluster", ha_sandbox.cluster, "--group", "web", "--since",
                       "1m", "--json", check=True).json()
        if e["event"] == "acquired"
    ]  # fmt: skip
    assert taken[-1]["node"] == answer.node
    assert taken[-1]["reason"] == f"{old} stopped renewing its lease (node, agent or network down)"
    text = cli("status", "--cluster", ha_sandbox.cluster, check=True).stdout
    assert "last failover of web: " in text and f"to {answer.node}, {old} stopped" in text

    # The crashed node boots again and rejoins by itself (no `up`); the group stays where it
    # is (stickiness).
    with Prober(vip(ha_sandbox)) as prober:
        since = time.monotonic()
        podman("start", container(ha_sandbox, old))
        wait_for(lambda: old in online(ha_sandbox), 60, 0.2, f"{old} online again")
        assert node_has_vip(ha_sandbox, old) is False
        # its etcd is back at real-time priority: the budget is part of the node's container
        assert scheduling(ha_sandbox, old, "etcd") == "SCHED_RR"
        time.sleep(3)
        assert prober.nodes(since) == [answer.node]
        assert prober.failures(since) == 0
    assert vip_holders(ha_sandbox) == [answer.node]
    assert holder(ha_sandbox) == answer.node


def test_agent_killed_on_holder(ha_sandbox, healthy):
    old = healthy
    with Prober(vip(ha_sandbox)) as prober, HolderSampler(ha_sandbox) as sampler:
        prober.wait_answer(time.monotonic(), 5, node=old)
        fault = time.monotonic()
        node_exec(ha_sandbox, old, "systemctl", "kill", "-s", "KILL", "clusterctl-agent")
        # ExecStopPost removes the VIP at once: no waiting for the lease
        wait_for(lambda: node_has_vip(ha_sandbox, old) is False, 5, 0.05, f"VIP gone on {old}")
        dropped = time.monotonic() - fault
        answer = prober.wait_answer(fault, GENEROUS, exclude=old)
        wait_for(lambda: holder(ha_sandbox) == answer.node, GENEROUS, what="status")
        time.sleep(2)
        outage = prober.outage(fault)
    print(f"\nagent SIGKILL on {old}: VIP dropped after {dropped:.3f} s, "
          f"{answer.node} serves, outage {outage:.3f} s")  # fmt: skip
    assert outage < GENEROUS
    assert sampler.doubles() == []
    assert vip_holders(ha_sandbox) == [answer.node]
    assert unit_active(ha_sandbox, old, "nginx") is False


def test_frozen_holder_is_replaced_and_lets_go_on_resume(ha_sandbox, healthy):
    old = healthy
    name = container(ha_sandbox, old)
    with (
        Prober(vip(ha_sandbox)) as prober,
        HolderSampler(ha_sandbox) as sampler,
        kernel_holders(ha_sandbox) as kernel,
    ):
        prober.wait_answer(time.monotonic(), 5, node=old)
        fault = time.monotonic()
        podman("pause", name)
        try:
            answer = prober.wait_answer(fault, GENEROUS, exclude=old)
            time.sleep(max(0.0, fault + 3 - time.monotonic()))  # frozen 3 s: past the TTL
            during = vip_holders(ha_sandbox)  # the frozen node is unknown, not a holder
            new = holder(ha_sandbox)
        finally:
            resume = time.time()
            podman("unpause", name)
            resumed = time.time()
        time.sleep(5)
        outage = prober.outage(fault)
    kept = [t - resume for t, has in sampler.samples[old] if t >= resume and has]
    print(f"\nfrozen {old} 3 s: {answer.node} took over, outage {outage:.3f} s; after resume "
          f"{old} still showed the VIP for {max(kept, default=0):.3f} s")  # fmt: skip
    assert during == [answer.node] and new == answer.node
    assert outage < GENEROUS
    # On resume the frozen node's agent is killed by the watchdog (or fences itself) and the
    # VIP goes at once. The kernel kept the address during the freeze (nothing can remove it
    # while the node is frozen), so the node's first ~0.1 s awake is allowed as a grace.
    assert max(kept, default=0) < 1.0
    assert sampler.doubles(since=resumed + 0.5) == []
    # Seen from the host, the frozen node's kernel kept serving the VIP until its lifetime
    # ran out: the next holder took it only after that (the ARP probe), and on resume no
    # refresh in flight put it back (netlink from the agent's own thread).
    assert kernel.dual == 0, [s for s in kernel.samples if len(s[1]) > 1][:5]
    assert len(kernel.samples) > 100 and any(old in h for _, h in kernel.samples)
    assert vip_holders(ha_sandbox) == [answer.node]
    assert holder(ha_sandbox) == answer.node  # sticky: the resumed node does not take it back


def test_a_frozen_etcd_leader_that_resumes_moves_nothing(ha_sandbox, healthy):
    """etcd 3.4.23: a leader that resumes after a freeze revokes the leases it thinks
    expired, the holder's among them (agent/peers.py). The holder takes web back with a new
    lease, the standby that sees web free waits for it, and web never moves for that.

    A separate, known limit is tolerated and counted: while the frozen leader is being
    replaced, the holder's renewals may find no leader before its deadline (CI's loaded
    machine: "renewal failed") and it fences itself on time; never two holders either way."""
    old = healthy
    retaken, elections = 0, 0
    for _ in range(3):
        other = next(n for n in node_names(ha_sandbox) if n != old)
        move_etcd_leader(ha_sandbox, other)
        since = time.time()
        with Prober(vip(ha_sandbox)) as prober, HolderSampler(ha_sandbox) as sampler:
            prober.wait_answer(time.monotonic(), 5, node=old)
            fault = time.monotonic()
            podman("pause", container(ha_sandbox, other))
            try:
                time.sleep(3)  # etcd elects another leader; the frozen one's view goes stale
            finally:
                podman("unpause", container(ha_sandbox, other))
            time.sleep(3)
        history = cli(
            "history", "--cluster", ha_sandbox.cluster, "--group", "web", "--since", "1m",
            "--json", check=True,
        ).json()  # fmt: skip
        events = [
            (e["node"], e["event"], e["reason"])
            for e in history
            if e["at"] >= since and e["group"] == "web"
        ]
        retaken += sum(1 for n, event, _ in events if (n, event) == (old, "retaken"))
        assert sampler.doubles() == []
        assert other not in prober.nodes(fault), events  # the resumed node never serves
        moved = [e for e in events if e[1] != "retaken"]
        if moved and moved[0][:3] == (old, "fenced", "renewal failed"):
            elections += 1  # the election outlasted the deadline: fenced on time, moved once
        else:
            assert moved == [] and prober.nodes(fault) == [old], events
        old = heal(ha_sandbox)
    print(
        f"\nfroze the etcd leader 3 times: the holder's lease was revoked and taken back "
        f"{retaken}x; the holder fenced during the election {elections}x"
    )


def test_partitioned_holder_fences_itself(ha_sandbox, healthy):
    old = healthy
    others = _others(ha_sandbox, old)
    with Prober(vip(ha_sandbox)) as prober, HolderSampler(ha_sandbox) as sampler:
        prober.wait_answer(time.monotonic(), 5, node=old)
        fault = time.monotonic()
        wall = time.time()
        partition(ha_sandbox, old)
        answer = prober.wait_answer(fault, GENEROUS, exclude=old)
        # The isolated node (still reachable through podman exec) dropped the VIP by itself.
        wait_for(lambda: node_has_vip(ha_sandbox, old) is False, 5, what=f"{old} fenced")
        assert unit_active(ha_sandbox, old, "nginx") is False
        fenced = [t - wall for t, has in sampler.samples[old] if t >= wall and not has][0]
        assert holder(ha_sandbox, others) == answer.node
        time.sleep(1)
        outage = prober.outage(fault)
        healed = time.time()
        unpartition(ha_sandbox, old)
        time.sleep(5)
    print(f"\npartition of {old}: it dropped the VIP after {fenced:.3f} s, {answer.node} "
          f"serves, outage {outage:.3f} s")  # fmt: skip
    assert outage < GENEROUS
    assert sampler.doubles() == []
    assert sampler.holders_seen(healed) == {answer.node}
    assert vip_holders(ha_sandbox) == [answer.node]
    assert holder(ha_sandbox) == answer.node


@pytest.mark.parametrize("holder_down", [False, True], ids=["holder-survives", "holder-down"])
def test_no_quorum_no_service(ha_sandbox, healthy, holder_down):
    survivor = _others(ha_sandbox, healthy)[0] if holder_down else healthy
    down = _others(ha_sandbox, survivor)
    fault = time.monotonic()
    for node in down:
        podman("kill", container(ha_sandbox, node))
    # The survivor has no quorum: it must not run the group (the holder fences itself).
    wait_for(lambda: not vip_holders(ha_sandbox), 6, 0.05, "no VIP anywhere")
    stopped = time.monotonic() - fault
    with HolderSampler(ha_sandbox) as sampler:
        time.sleep(3)
    assert sampler.holders_seen() == set()
    assert unit_active(ha_sandbox, survivor, "nginx") is False
    print(f"\n{' and '.join(down)} down: no VIP anywhere after {stopped:.3f} s")

    # Quorum returns (the killed nodes restart and rejoin by themselves): service resumes.
    restarted = time.monotonic()
    for node in down:
        podman("start", container(ha_sandbox, node))
    with Prober(vip(ha_sandbox)) as prober:
        answer = prober.wait_answer(restarted, 90)
    print(f"restarted: {answer.node} served again {answer.sent - restarted:.1f} s later")
    # The first to serve may not keep it: on this loaded machine, with two nodes booting, its
    # nginx start has been seen to outlast the time its lease left it (the group then moved
    # on, as a failed start does). What must hold: one node holds it, and it serves the VIP.
    settled = wait_for(
        lambda: (h := holder(ha_sandbox)) is not None and vip_holders(ha_sandbox) == [h], 30
    )
    assert settled
