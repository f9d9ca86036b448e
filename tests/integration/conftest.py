"""A real sandbox cluster shared by the integration tests (session scope).

Each test run uses its own state root and cluster names prefixed `it`, so it never touches a
user's `demo` cluster; leftovers of an interrupted earlier run are removed first (by exact
cluster name), and everything is removed at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

STATE_ROOT = Path(os.environ.get("CLUSTERCTL_IT_STATE", "/tmp/clusterctl-it-state"))
CLUSTER = "it-main"  # profile web: nginx on every node (the walking skeleton)
HA_CLUSTER = "it-ha"  # profile ha: etcd, agents, group web = VIP + nginx
LB_CLUSTER = "it-lb"  # profile lb: etcd, agents, group web = VIP + load balancer (nft)


@dataclass
class CliResult:
    rc: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


def cli(
    *args: str, timeout: float = 600, check: bool = False, env: dict | None = None
) -> CliResult:
    """Run the real CLI in a subprocess, exactly as an operator would."""
    full_env = dict(os.environ, CLUSTERCTL_STATE_DIR=str(STATE_ROOT))
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "clusterctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        stdin=subprocess.DEVNULL,
    )
    result = CliResult(proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"clusterctl {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return result


def podman(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, CONTAINERS_CONF=str(STATE_ROOT / "containers.conf"))
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, env=env, check=check, input=stdin,
        timeout=120,
    )  # fmt: skip


def cluster_leftovers(cluster: str) -> dict[str, list[str]]:
    """Everything of a cluster that podman or the state directory still knows about."""
    containers = podman(
        "ps", "-a", "--filter", f"label=clusterctl.cluster={cluster}", "--format", "{{.Names}}"
    ).stdout.split()
    networks = [
        n for n in podman("network", "ls", "--format", "{{.Name}}").stdout.split()
        if n == f"clusterctl-{cluster}"
    ]  # fmt: skip
    state = [str(STATE_ROOT / cluster)] if (STATE_ROOT / cluster).exists() else []
    return {"containers": containers, "networks": networks, "state": state}


@dataclass
class Sandbox:
    cluster: str
    up: CliResult
    info: dict

    @property
    def nodes(self) -> list[dict]:
        return self.info["nodes"]

    @property
    def state_dir(self) -> Path:
        return STATE_ROOT / self.cluster

    def exec(self, node: str, *cmd: str) -> str:
        return podman("exec", f"{self.cluster}-{node}", *cmd).stdout


def _sandbox(cluster: str, profile: str) -> Iterator[Sandbox]:
    """Build a 3-node cluster (after removing leftovers of an interrupted run), yield it,
    and remove it at the end of the session."""
    cli("down", "--cluster", cluster)
    result = cli("up", "--cluster", cluster, "--profile", profile, "--json", timeout=900)
    try:
        assert result.rc == 0, result.stderr[-3000:]
        yield Sandbox(cluster, result, result.json())
    finally:
        cli("down", "--cluster", cluster)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """A 3-node cluster in the web profile (the walking skeleton)."""
    yield from _sandbox(CLUSTER, "web")


@pytest.fixture(scope="session")
def ha_sandbox() -> Iterator[Sandbox]:
    """A 3-node cluster in the ha profile, shared by the failover tests."""
    yield from _sandbox(HA_CLUSTER, "ha")


@pytest.fixture(scope="session")
def lb_sandbox() -> Iterator[Sandbox]:
    """A 3-node cluster in the lb profile (engine nft), shared by the LB and scaling tests."""
    yield from _sandbox(LB_CLUSTER, "lb")
