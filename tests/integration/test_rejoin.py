"""Nodes that crash and restart rejoin by themselves: etcd member, agent, LB backend, with
no `clusterctl up`; a cluster whose every node stopped (the host restarted) comes back with
one `up`, its configuration intact.

Outages are printed (`pytest -s`); speed is the benchmark's business (`bench failover`,
fault rolling_restart)."""

from __future__ import annotations

import base64
import threading
import time

import pytest

from clusterctl.agent.keys import Keys
from clusterctl.agent.store.base import StoreError

from .conftest import cli, podman
from .hahelpers import (
    HolderSampler,
    Prober,
    api_get,
    cli_status,
    container,
    etcd_store,
    holder,
    node_names,
    tls_opener,
    vip,
    wait_for,
)
from .lbhelpers import backend_rows, lb_heal, lb_ready, vip_serves
from .rejoinhelpers import QuorumWatch, crash_and_restart, etcd_addresses, member_healthy, online
from .test_lb import lb  # noqa: F401 - the healthy 3-node lb cluster's holder

GENEROUS = 10.0  # seconds: a bound for "it happened", not a performance target
QUORUM_HICCUP = 2.0  # longest time without a healthy etcd member that is an election, not a loss


@pytest.fixture
def lb5(lb5_sandbox):
    base = node_names(lb5_sandbox)
    yield lb_heal(lb5_sandbox, base)
    lb_heal(lb5_sandbox, base)


def _rolling_restart(sandbox, first_holder: str, batch: int) -> list[str]:
    """Crash and restart every node, ``batch`` at a time, the holder in the first batch;
    each batch waits only until its nodes report online. Checks, throughout: the VIP serves
    again after every round, etcd's quorum is never lost, never two VIP holders."""
    names = node_names(sandbox)
    order = [first_holder] + [n for n in names if n != first_holder]
    rounds = [order[i : i + batch] for i in range(0, len(order), batch)]
    lines = []
    with (
        Prober(vip(sandbox)) as prober,
        HolderSampler(sandbox, limit=600) as sampler,
        QuorumWatch(sandbox, etcd_addresses(sandbox)) as quorum,
    ):
        for nodes in rounds:
            before = holder(sandbox)
            fault = time.monotonic()
            took = crash_and_restart(sandbox, nodes)
            answer = prober.wait_answer(fault, GENEROUS)
            time.sleep(1.0)
            after = holder(sandbox)
            lines.append(
                f"{'+'.join(nodes)} restarted, online after {took:.1f} s; holder {before} -> "
                f"{after}; VIP outage {prober.outage(fault):.2f} s, "
                f"{prober.failures(fault)} failed probes"
            )
            assert answer.node and after is not None, lines[-1]
            if before in nodes:
                assert after not in nodes, lines[-1]
            else:
                assert after == before, lines[-1]  # a restarted node takes nothing back
        loss = quorum.longest_loss()
    print("\n" + "\n".join(lines) + f"\nlongest time without a healthy etcd member: {loss:.2f} s")
    assert sampler.doubles() == []
    assert loss < QUORUM_HICCUP, f"etcd quorum lost for {loss:.2f} s"
    return names


def _all_rejoined(sandbox, names: list[str]) -> None:
    """Every node online, every etcd member healthy, every backend up — without `up`."""
    wait_for(lambda: lb_ready(sandbox), 60, 0.5, "every backend up, one holder")
    assert online(sandbox) == set(names)
    assert all(member_healthy(tls_opener(sandbox), a) for a in etcd_addresses(sandbox))


def test_rolling_crash_restart_of_every_node_rejoins_without_up(lb_sandbox, lb):  # noqa: F811
    names = _rolling_restart(lb_sandbox, lb, batch=1)
    _all_rejoined(lb_sandbox, names)


def test_five_nodes_two_at_a_time_rejoin_without_up(lb5_sandbox, lb5):
    names = _rolling_restart(lb5_sandbox, lb5, batch=2)
    _all_rejoined(lb5_sandbox, names)


def _range(sandbox, address: str, prefix: str) -> list[str]:
    """Keys under ``prefix`` as this member alone has them (a serializable read)."""
    key = base64.b64encode(prefix.encode()).decode()
    end = base64.b64encode(prefix[:-1].encode() + bytes([ord(prefix[-1]) + 1])).decode()
    reply = etcd_store(sandbox, [address], 5.0)._call(
        "/v3/kv/range",
        {"key": key, "range_end": end, "serializable": True, "keys_only": True},
        timeout=5,
    )
    return [base64.b64decode(kv["key"]).decode() for kv in reply.get("kvs") or []]


def test_etcd_member_reboot_while_writing_loses_no_key(lb_sandbox, lb):  # noqa: F811
    addresses = etcd_addresses(lb_sandbox)
    store = etcd_store(lb_sandbox, addresses)
    prefix = f"/clusterctl-it/{lb_sandbox.cluster}/writes/"
    store.delete_prefix(prefix)
    acked: list[str] = []
    failed = 0
    stop = threading.Event()

    def write() -> None:
        nonlocal failed
        for i in range(100_000):
            if stop.is_set():
                return
            key = f"{prefix}{i:06d}"
            try:
                store.put(key, "x" * 64, timeout=2.0)
                acked.append(key)
            except StoreError:
                failed += 1
            time.sleep(0.01)

    victim = next(n for n in node_names(lb_sandbox)[:3] if n != lb)
    address = dict((n["name"], n["address"]) for n in lb_sandbox.nodes)[victim]
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        time.sleep(2.0)
        restarted = time.monotonic()
        podman("restart", "-t", "10", container(lb_sandbox, victim))
        ready = wait_for(
            lambda: store.member_ready(f"https://{address}:2379", prefix),
            120,
            0.2,
            f"{victim}'s member",
        )
        back = time.monotonic() - restarted
        time.sleep(2.0)
    finally:
        stop.set()
        writer.join(timeout=10)
    assert ready
    on_member = set(_range(lb_sandbox, address, prefix))
    missing = [k for k in acked if k not in on_member]
    print(f"\n{victim} rebooted while writing: its member serves again after {back:.1f} s; "
          f"{len(acked)} writes acknowledged, {failed} refused meanwhile, {len(missing)} "
          "missing on the rebooted member")  # fmt: skip
    store.delete_prefix(prefix)
    assert len(acked) > 200
    assert missing == []
    wait_for(lambda: victim in online(lb_sandbox), 60, 0.5, f"{victim} online")


def _configuration(sandbox) -> dict[str, str]:
    """Every persistent key of the cluster (specs, backends, standby, fail counts): what an
    operator set. Keys bound to leases (members, leaders) are left out, and so is the failover
    history, a log that the restart itself rightly adds to."""
    keys = Keys(sandbox.cluster)
    store = etcd_store(sandbox, etcd_addresses(sandbox))
    found = store.get_range(keys.root, keys.state_end, timeout=5)
    return {k: v for k, v in found.items() if "/members/" not in k and not k.endswith("/leader")}


def test_host_restart_then_up_brings_the_same_cluster_back(lb_sandbox, lb):  # noqa: F811
    cluster = lb_sandbox.cluster
    names = node_names(lb_sandbox)[:3]
    others = [n for n in names if n != lb]
    for args in (("weight", others[0], "3"), ("drain", others[1]), ("standby", others[1])):
        result = cli(*args, "--cluster", cluster, timeout=120)
        assert result.rc == 0, result.stderr
    ban = api_get(lb_sandbox, lb, "/v1/groups/web/ban", body={"node": others[0]})
    assert ban[0] == 200, ban
    configured = _configuration(lb_sandbox)
    rows = {n: (r["state"], r["weight"]) for n, r in backend_rows(lb_sandbox).items()}

    for node in names:  # what a host restart does to every node container
        podman("stop", "-t", "10", container(lb_sandbox, node))
    stopped = cli("status", "--cluster", cluster, "--json", timeout=60)
    assert stopped.rc == 0, stopped.stderr
    assert stopped.json()["state"] == "stopped"
    text = cli("status", "--cluster", cluster, timeout=60)
    assert f"clusterctl up --cluster {cluster}" in text.stdout
    assert "Traceback" not in text.stderr

    began = time.monotonic()
    up = cli("up", "--cluster", cluster, "--json", timeout=600)
    assert up.rc == 0, up.stderr[-3000:]
    wait_for(lambda: vip_serves(lb_sandbox), 60, 0.2, "the VIP")
    took = time.monotonic() - began
    info = up.json()
    print(f"\nhost restart: up started {info['started']} and the VIP served after {took:.1f} s")
    assert info["started"] == names
    assert "started 3 stopped node(s)" in up.stderr
    assert [(n["name"], n["address"]) for n in info["nodes"]] == [
        (n["name"], n["address"]) for n in lb_sandbox.nodes
    ]
    wait_for(lambda: online(lb_sandbox) == set(names), 60, 0.5, "every node online")
    assert _configuration(lb_sandbox) == configured
    assert {n: (r["state"], r["weight"]) for n, r in backend_rows(lb_sandbox).items()} == rows
    assert others[0] in next(g for g in cli_status(lb_sandbox)["groups"])["bans"]
    for args in (("unstandby", others[1]), ("undrain", others[1]), ("weight", others[0], "1")):
        assert cli(*args, "--cluster", cluster, timeout=120).rc == 0
    assert api_get(lb_sandbox, lb, "/v1/groups/web/clear", body={})[0] == 200


def _boot_units(sandbox, node: str) -> set[str]:
    """The units systemd will start when ``node`` boots (default.target's tree)."""
    tree = sandbox.exec(node, "systemctl", "list-dependencies", "--plain", "--no-pager",
                        "default.target")  # fmt: skip
    return {line.strip() for line in tree.splitlines()}


def test_up_repairs_a_node_whose_boot_links_are_wrong(lb_sandbox, lb):  # noqa: F811
    node = node_names(lb_sandbox)[2]
    wanted = {"etcd.service", "clusterctl-agent.service", "nginx.service"}
    assert wanted <= _boot_units(lb_sandbox, node)
    assert "haproxy.service" not in _boot_units(lb_sandbox, node)
    # What the old image left: the wants links gone, an alias link that makes `systemctl
    # is-enabled` answer "enabled" all the same; and HAProxy wrongly enabled.
    lb_sandbox.exec(node, "sh", "-c",
        "cd /etc/systemd/system && rm multi-user.target.wants/etcd.service "
        "multi-user.target.wants/clusterctl-agent.service && "
        "ln -sf /lib/systemd/system/etcd.service etcd2.service && "
        "systemctl enable haproxy.service && systemctl daemon-reload")  # fmt: skip
    assert lb_sandbox.exec(node, "systemctl", "is-enabled", "etcd").strip() == "enabled"
    assert not {"etcd.service", "clusterctl-agent.service"} & _boot_units(lb_sandbox, node)

    # A check reports the drift and changes nothing.
    check = cli("up", "--cluster", lb_sandbox.cluster, "--check", "--json", timeout=600)
    assert check.rc == 0, check.stderr[-3000:]
    would = {(c["host"], c["task"]) for c in check.json()["changes"]}
    assert would == {
        (node, "Start at boot: etcd.service"),
        (node, "Start at boot: clusterctl-agent.service"),
        (node, "Keep from starting at boot: haproxy.service"),
    }, would
    assert not {"etcd.service", "clusterctl-agent.service"} & _boot_units(lb_sandbox, node)
    assert "haproxy.service" in _boot_units(lb_sandbox, node)

    result = cli("up", "--cluster", lb_sandbox.cluster, "--json", timeout=600)
    assert result.rc == 0, result.stderr[-3000:]
    assert result.json()["changed"] > 0
    units = _boot_units(lb_sandbox, node)
    assert wanted <= units and "haproxy.service" not in units, sorted(units)
