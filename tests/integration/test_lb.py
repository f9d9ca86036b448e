"""The load balancer on a real lb sandbox (`it-lb`, engine nft unless a test switches it),
under a bounded load: a few clients looping GET http://VIP/ (1 s timeout each). Each test
starts from, and leaves, a healthy cluster: 3 nodes, every backend active, weight 1, up.
Failed-request counts are printed (`pytest -s`)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO, cli, podman
from .hahelpers import (
    cli_status,
    container,
    container_state,
    holder,
    node_address,
    node_exec,
    vip,
    wait_for,
)
from .lbhelpers import LoadClient, backend_rows, lb_heal, lb_ready, vip_serves
from .test_bad_input import assert_clean_error

BASE = ["node1", "node2", "node3"]
# roles/agent/defaults/main.yml: agent_lb_inter, agent_lb_rise, agent_lb_fall
INTER, RISE, FALL = 0.5, 2, 2
SLACK = 1.0  # a check round, its timeout, the agent's loop and nft's swap


@pytest.fixture
def lb(lb_sandbox):
    """The holder of a healthy lb cluster; healed again afterwards."""
    yield lb_heal(lb_sandbox, BASE)
    lb_heal(lb_sandbox, BASE)


def _unit_since(sandbox, node: str, unit: str) -> str:
    return node_exec(sandbox, node, "systemctl", "show", "-p", "ActiveEnterTimestamp", unit)[1]


@dataclass(frozen=True)
class Bounce:
    """Times (monotonic) of one nginx stop/start on a backend under load."""

    gone: Any  # what the `gone` predicate returned once the LB had dropped the backend
    stopped: float
    out: float
    started: float
    back: Any  # the first request the backend answered again
    end: float


def _bounce_nginx(
    sandbox, load: LoadClient, victim: str, first_answer_s: float,
    gone: Callable[[], Any], what: str,
) -> Bounce:  # fmt: skip
    """Stop nginx on ``victim`` once it answers, wait until ``gone()`` says the LB dropped it,
    leave it out 2 s, start it, wait until it answers through the VIP again, then 1 s more."""
    load.wait_answer(victim, time.monotonic(), first_answer_s)
    stopped = time.monotonic()
    node_exec(sandbox, victim, "systemctl", "stop", "nginx")
    dropped = wait_for(gone, FALL * INTER + 5, what=f"{victim} {what}")
    out = time.monotonic()
    time.sleep(2.0)
    started = time.monotonic()
    node_exec(sandbox, victim, "systemctl", "start", "nginx")
    back = load.wait_answer(victim, started, RISE * INTER + 5)
    time.sleep(1.0)
    return Bounce(dropped, stopped, out, started, back, time.monotonic())


def _state_weight(rows: dict) -> dict:
    return {n: (r["address"], r["state"], r["weight"]) for n, r in rows.items()}


def test_status_json_lists_backends(lb_sandbox, lb):
    data = cli_status(lb_sandbox)
    rows = {b["node"]: b for b in data["backends"]}
    assert sorted(rows) == BASE, data.get("agent_error")
    for node, row in rows.items():
        assert row["address"] == node_address(lb_sandbox, node)
        assert (row["state"], row["weight"], row["health"]) == ("active", 1, "up"), row
        assert isinstance(row["active_connections"], int), row
    assert [g["node"] for g in data["groups"] if g["name"] == "web"] == [lb]
    text = cli("status", "--cluster", lb_sandbox.cluster, timeout=60)
    assert text.rc == 0, text.stderr
    assert "BACKEND" in text.stdout and "HEALTH" in text.stdout and "ACTIVE" in text.stdout


def test_nft_backend_down_leaves_after_fall_and_returns_after_rise(lb_sandbox, lb):
    victim = next(n for n in BASE if n != lb)
    with LoadClient(vip(lb_sandbox)) as load:
        b = _bounce_nginx(
            lb_sandbox, load, victim, 5,
            lambda: (r := backend_rows(lb_sandbox)[victim])["in_rotation"] is False and r,
            "out of rotation",
        )  # fmt: skip
    row, stopped, out, started, back, end = b.gone, b.stopped, b.out, b.started, b.back, b.end
    failed = load.failed(stopped)
    window = max((p.sent for p in failed), default=stopped) - stopped
    print(
        f"\nnft, nginx stopped on {victim}: {len(failed)} failed request(s) within "
        f"{window:.2f} s, out of rotation after {out - stopped:.2f} s, back "
        f"{back.sent - started:.2f} s after start; {load.summary(stopped, end)}"
    )
    assert (row["state"], row["health"]) == ("active", "down"), row
    # Failures only until `fall` checks found it dead; none while it is out, none on return.
    assert window <= FALL * INTER + INTER + SLACK, [(p.sent - stopped, p.error) for p in failed]
    assert not load.failed(out)
    assert victim not in load.counts(out, started)
    assert back.sent - started <= RISE * INTER + INTER + SLACK
    assert load.counts(back.sent, end)[victim] > 0


def test_lb_holder_crash_keeps_backends_weights_and_drains(lb_sandbox, lb):
    old = lb
    zero, other = [n for n in BASE if n != old]
    for node, weight in ((zero, "0"), (other, "2")):
        result = cli("weight", node, weight, "--cluster", lb_sandbox.cluster, timeout=60)
        assert result.rc == 0, result.stderr
    wait_for(lambda: backend_rows(lb_sandbox)[zero]["in_rotation"] is False, 5, what="weight 0")
    before = {n: (r["state"], r["weight"]) for n, r in backend_rows(lb_sandbox).items()}
    with LoadClient(vip(lb_sandbox)) as load:
        time.sleep(1.0)
        fault = time.monotonic()
        podman("kill", container(lb_sandbox, old))
        # the survivors name the old holder until its lease expires
        new = wait_for(
            lambda: (h := holder(lb_sandbox, [zero, other])) != old and h, 15, 0.1, "a new holder"
        )
        moved = time.monotonic()
        answer = load.wait_answer(other, moved, 10)
        time.sleep(2.0)
        end = time.monotonic()
    failed = load.failed(fault)
    print(
        f"\nLB holder {old} killed: {new} took over after {moved - fault:.2f} s, "
        f"{len(failed)} failed request(s); {load.summary(fault, end)}"
    )
    assert new in (zero, other)
    assert zero not in load.counts(0, end)  # weight 0 before and after the crash
    assert not load.failed(answer.sent), load.summary(answer.sent, end)
    assert set(load.counts(answer.sent, end)) == {other}  # old is dead, zero has weight 0
    assert container_state(lb_sandbox, old) != "running"
    rows = backend_rows(lb_sandbox)
    assert {n: (r["state"], r["weight"]) for n, r in rows.items()} == before
    assert rows[old]["health"] == "down" and rows[other]["health"] == "up"
    status = {b["node"]: b for b in cli_status(lb_sandbox)["backends"]}
    assert (status[zero]["weight"], status[other]["weight"]) == (0, 2)


def test_invalid_input_is_refused_and_changes_nothing(lb_sandbox, lb):
    def snapshot() -> dict:
        return {
            n: (
                node_exec(lb_sandbox, n, "md5sum", "/etc/clusterctl/agent.json")[1],
                _unit_since(lb_sandbox, n, "clusterctl-agent"),
                _unit_since(lb_sandbox, n, "nginx"),
                _unit_since(lb_sandbox, n, "etcd"),
            )
            for n in BASE
        }

    nodes_before = snapshot()
    rows_before = backend_rows(lb_sandbox)
    cluster = lb_sandbox.cluster
    assert_clean_error(cli("drain", "node9", "--cluster", cluster), "unknown node 'node9'")
    assert_clean_error(cli("weight", "node1", "999", "--cluster", cluster), "weight 999 is out")
    assert_clean_error(cli("weight", "node1", "-1", "--cluster", cluster), "weight -1 is out")
    result = cli("scale", "--remove", "node1", "--cluster", cluster)
    assert_clean_error(result, "node1 runs one of the 3 etcd members")
    # An unknown algorithm: the agent refuses the config before it replaces the running one.
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i", str(lb_sandbox.state_dir / "inventory.yml"),
            "playbooks/site.yml", "-e", "clusterctl_lb_algorithm=bogus",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "known lb algorithms" in proc.stdout, proc.stdout[-3000:]
    assert "'bogus'" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    # Nothing changed: configs, agents and web servers (not restarted), backends, holder.
    assert snapshot() == nodes_before
    assert _state_weight(backend_rows(lb_sandbox)) == _state_weight(rows_before)
    after = wait_for(lambda: lb_ready(lb_sandbox), 10, 0.5, "a healthy lb cluster")
    assert vip_serves(lb_sandbox)
    if after != lb:
        # Not a change of configuration (checked above): Ansible's load on the nodes can
        # delay a lease renewal (TTL 1 s) and the group moves. Show the holder's account.
        log = node_exec(
            lb_sandbox, lb, "journalctl", "-u", "clusterctl-agent", "--since", "-5min",
            "--no-pager", "-o", "cat",
        )[1]  # fmt: skip
        print(f"\nthe group moved from {lb} to {after} during the failed run:\n{log[-1500:]}")


def _agent_timings(sandbox, node: str) -> tuple:
    """The timings the agent derives from its config (it checks and prints them)."""
    rc, text = node_exec(
        sandbox, node, "python3", "/usr/local/lib/clusterctl/clusterctl-agent.pyz",
        "--config", "/etc/clusterctl/agent.json", "--check-config",
    )  # fmt: skip
    assert rc == 0, text
    line = next(x for x in text.splitlines() if x.startswith("timings: "))
    values = dict(item.split("=") for item in line.removeprefix("timings: ").split())
    keys = ("lease_ttl", "fence_margin", "renew_timeout")
    return (*(float(values[k]) for k in keys), int(values["vip_lifetime"]))


def test_up_switches_to_haproxy_and_a_2s_lease_in_place_and_a_backend_down_fails_no_request(
    lb_sandbox, lb
):
    """One `up` changes the engine and the lease together (two `up`s in all: a converge of
    the lb cluster is most of this module's time): the agents accept the scaled timings, and
    HAProxy drops a stopped backend without a failed request; then back to nft and 1 s."""
    cluster = lb_sandbox.cluster
    try:
        result = cli(
            "up", "--cluster", cluster, "--lb-engine", "haproxy", "--lease-ttl", "2", "--json",
            timeout=600,
        )  # fmt: skip
        assert result.rc == 0, result.stderr[-3000:]
        assert result.json()["lease_ttl"] == 2
        for node in BASE:
            assert _agent_timings(lb_sandbox, node) == (2.0, 0.8, 0.5, 2), node
        # the agents accepted the new timings (they refuse inconsistent ones at start)
        current = wait_for(lambda: lb_ready(lb_sandbox, "haproxy"), 60, 0.5, "haproxy serving")
        victim = next(n for n in BASE if n != current)
        with LoadClient(vip(lb_sandbox)) as load:
            b = _bounce_nginx(
                lb_sandbox, load, victim, 10,
                lambda: backend_rows(lb_sandbox)[victim]["health"] == "down", "down",
            )  # fmt: skip
        stopped, out, started, back, end = b.stopped, b.out, b.started, b.back, b.end
        print(
            f"\nhaproxy, lease 2 s, nginx stopped on {victim}: {len(load.failed(stopped))} "
            f"failed request(s), down after {out - stopped:.2f} s, back "
            f"{back.sent - started:.2f} s after start; {load.summary(stopped, end)}"
        )
        assert not load.failed(), [(p.sent - stopped, p.error) for p in load.failed()]
        assert victim not in load.counts(out, started)
        assert load.counts(back.sent, end)[victim] > 0
    finally:
        result = cli(
            "up", "--cluster", cluster, "--lb-engine", "nft", "--lease-ttl", "1", timeout=600
        )
        assert result.rc == 0, result.stderr[-3000:]
    for node in BASE:
        assert _agent_timings(lb_sandbox, node) == (1.0, 0.4, 0.25, 1), node
    wait_for(lambda: lb_ready(lb_sandbox), 60, 0.5, "nft serving again")
