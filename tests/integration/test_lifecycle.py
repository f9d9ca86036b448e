"""Ctrl-C in the middle of `up`, then `up` again, then `down`: nothing is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

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


# Ctrl-C must stop `up` promptly, whatever it is doing (a podman call in flight finishes
# first): a bound for "it stopped", not a performance target.
STOPS_WITHIN = 15.0


@pytest.fixture
def clean():
    """Start without the cluster, and remove it at the end whatever happened."""
    cli("down", "--cluster", CLUSTER)
    yield
    cli("down", "--cluster", CLUSTER)


def _start_up() -> subprocess.Popen:
    env = dict(os.environ, CLUSTERCTL_STATE_DIR=str(STATE_ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "clusterctl", "up", "--cluster", CLUSTER],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip


def _interrupt_when(proc: subprocess.Popen, moment: str, *exists: str) -> str:
    """Send SIGINT (what Ctrl-C in a terminal does) once `podman <exists>` succeeds; check
    that `up` stopped with 130 and one clean message; return its stderr."""
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if podman(*exists, check=False).returncode == 0:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "up ended before it could be interrupted: " + (
            proc.stderr.read()[-2000:] if proc.stderr else ""
        )
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=STOPS_WITHIN)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    print(f"\nup stopped {time.monotonic() - sent:.2f} s after SIGINT ({moment})")
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    return stderr


def test_interrupted_up_then_up_then_down(node_image, clean):
    proc = _start_up()
    stderr = _interrupt_when(proc, "nodes being made", "container", "exists", f"{CLUSTER}-node2")
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


def test_down_after_interrupt_right_after_start(node_image, clean):
    proc = _start_up()
    _interrupt_when(proc, "network just made", "network", "exists", f"clusterctl-{CLUSTER}")
    down = cli("down", "--cluster", CLUSTER)
    assert down.rc == 0, down.stderr
    assert cluster_leftovers(CLUSTER) == {"containers": [], "networks": [], "state": []}
