"""`clusterctl chaos` on the real lb sandbox: a short run of every kind of fault must end
with no two-holder sample, no lost configuration, a converged cluster and a history that
names every failover; bad input and an unhealthy cluster inject nothing."""

from __future__ import annotations

import pytest

from .conftest import cli
from .hahelpers import container_state, node_exec, node_names, wait_for
from .lbhelpers import backend_rows, lb_heal

BASE = ["node1", "node2", "node3"]
CHAOS_SECONDS = "90"


@pytest.fixture
def lb(lb_sandbox):
    """A healthy lb cluster before and after (weights reset, nodes back)."""
    yield lb_heal(lb_sandbox, BASE)
    lb_heal(lb_sandbox, BASE)


def untouched(sandbox) -> bool:
    """No node paused or stopped, no partition table: nothing was injected."""
    for node in node_names(sandbox):
        if container_state(sandbox, node) != "running":
            return False
        if "clusterctl_chaos" in node_exec(sandbox, node, "nft", "list", "tables")[1]:
            return False
    return True


def test_a_short_chaos_run_passes_and_the_history_names_every_failover(lb_sandbox, lb, tmp_path):
    cluster = lb_sandbox.cluster
    # configuration an operator set: it must survive every fault
    assert cli("weight", "node2", "3", "--cluster", cluster, timeout=60).rc == 0
    assert cli("drain", "node3", "--cluster", cluster, timeout=60).rc == 0
    wait_for(lambda: backend_rows(lb_sandbox)["node3"]["in_rotation"] is False, 10, what="drain")
    run = cli(
        "chaos", "--cluster", cluster, "--duration", CHAOS_SECONDS, "--seed", "11", "--rate", "30",
        "--out", str(tmp_path), "--json", timeout=600,
    )  # fmt: skip
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = run.json()
    print("\n" + (tmp_path / "chaos.md").read_text())
    assert report["verdict"] == "PASS" and report["violations"] == []
    assert report["dual_holder_samples"] == 0 and report["holder_samples"] > 1000
    assert report["converged"] and report["lost_configuration"] == []
    kinds = {f["kind"] for f in report["faults"]}
    assert len(report["faults"]) >= 4 and len(kinds) >= 3, report["faults"]
    assert all(f["healthy_s"] is not None for f in report["faults"]), report["faults"]
    # the history has the run's failovers in order, each with a reason
    assert report["holder_changes"] >= 1 and report["history_missing"] == []
    history = cli(
        "history", "--cluster", cluster, "--group", "web", "--since", "10m", "--json", check=True
    ).json()
    taken = [e for e in history if e["event"] == "acquired"]
    assert len(taken) >= report["holder_changes"]
    assert all(e["reason"] for e in taken)
    assert [e["at"] for e in history] == sorted(e["at"] for e in history)
    svg = (tmp_path / "timeline.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<title>") == len(report["faults"])
    rows = backend_rows(lb_sandbox)
    assert (rows["node2"]["weight"], rows["node3"]["state"]) == (3, "draining")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--faults", "crash,meteor"], "unknown fault 'meteor'"),
        (["--duration", "0"], "--duration 0 is out of range"),
        (["--rate", "-1"], "--rate -1 is out of range"),
    ],
)
def test_bad_chaos_input_is_one_line_and_injects_nothing(lb_sandbox, lb, args, message):
    result = cli("chaos", "--cluster", lb_sandbox.cluster, *args, timeout=60)
    assert result.rc != 0
    assert f"error: {message}" in result.stderr and "Traceback" not in result.stderr
    assert untouched(lb_sandbox)


def test_chaos_refuses_a_cluster_without_quorum(lb_sandbox, lb):
    for node in ("node1", "node2"):
        node_exec(lb_sandbox, node, "systemctl", "stop", "etcd")
    try:
        result = cli("chaos", "--cluster", lb_sandbox.cluster, "--duration", "30", timeout=120)
        assert result.rc != 0
        assert "error: chaos needs a healthy cluster" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert untouched(lb_sandbox)
    finally:
        for node in ("node1", "node2"):
            node_exec(lb_sandbox, node, "systemctl", "start", "etcd")


def test_status_watch_redraws_every_second_until_interrupted(lb_sandbox, lb):
    import os
    import signal
    import subprocess
    import sys
    import time

    from .conftest import STATE_ROOT

    env = dict(os.environ, CLUSTERCTL_STATE_DIR=str(STATE_ROOT))
    watch = subprocess.Popen(
        [sys.executable, "-m", "clusterctl", "status", "--watch", "--cluster", lb_sandbox.cluster],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(6)
    finally:
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=30)
    assert watch.returncode == 0, err[-2000:]
    blocks = out.count(f"cluster {lb_sandbox.cluster} (podman")
    assert blocks >= 2, out[-3000:]  # a pipe gets plain blocks, no terminal escapes
    assert "\033[" not in out and "Traceback" not in err
