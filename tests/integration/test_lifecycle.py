"""Ctrl-C in the middle of `up`, then `up` again, then `down`: nothing is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from .conftest import STATE_ROOT, cli, cluster_leftovers, podman
from .hahelpers import _OPENER, wait_for

CLUSTER = "it-life"


def _page(url: str) -> str | None:
    """The page's text (each node's names the node), or None if it does not answer."""
    try:
        with _OPENER.open(url, timeout=2.0) as response:
            return response.read().decode().strip()
    except OSError:
        return None


def test_interrupted_up_then_up_then_down(sandbox):
    cli("down", "--cluster", CLUSTER)
    env = dict(os.environ, CLUSTERCTL_STATE_DIR=str(STATE_ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "clusterctl", "up", "--cluster", CLUSTER],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if podman("container", "exists", f"{CLUSTER}-node2", check=False).returncode == 0:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "up ended before it could be interrupted"
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert "Traceback" not in stderr
    assert f"clusterctl down --cluster {CLUSTER}" in stderr

    again = cli("up", "--cluster", CLUSTER, "--json")
    assert again.rc == 0, again.stderr[-2000:]
    info = again.json()
    assert len(info["nodes"]) == 3
    # The default profile: the VIP's load balancer answers from the nodes' web servers.
    assert (info["profile"], info["lb_engine"], info["lease_ttl"]) == ("lb", "nft", 1)
    url = f"http://{info['vip']}/"
    wait_for(lambda: _page(url), 30, 0.5, "the VIP to answer")
    answered = {_page(url) for _ in range(12)}
    assert len(answered - {None}) >= 2, answered  # round robin over several backends

    down = cli("down", "--cluster", CLUSTER)
    assert down.rc == 0, down.stderr
    assert cluster_leftovers(CLUSTER) == {"containers": [], "networks": [], "state": []}
    assert f"removed network clusterctl-{CLUSTER}" in down.stderr


def test_down_after_interrupt_right_after_start(sandbox):
    cli("down", "--cluster", CLUSTER)
    env = dict(os.environ, CLUSTERCTL_STATE_DIR=str(STATE_ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "clusterctl", "up", "--cluster", CLUSTER],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if podman("network", "exists", f"clusterctl-{CLUSTER}", check=False).returncode == 0:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    down = cli("down", "--cluster", CLUSTER)
    assert down.rc == 0, down.stderr
    assert cluster_leftovers(CLUSTER) == {"containers": [], "networks": [], "state": []}
