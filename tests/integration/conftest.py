"""Real sandbox clusters shared by the integration tests, one at a time.

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

REPO = Path(__file__).resolve().parents[2]  # the checkout: playbooks/ run from here
STATE_ROOT = Path(os.environ.get("CLUSTERCTL_IT_STATE", "/tmp/clusterctl-it-state"))
CLUSTER = "it-main"  # profile web: nginx on every node (the walking skeleton)
HA_CLUSTER = "it-ha"  # profile ha: etcd, agents, group web = VIP + nginx
LB_CLUSTER = "it-lb"  # profile lb: etcd, agents, group web = VIP + load balancer (nft)
LB5_CLUSTER = "it-lb5"  # profile lb on 5 nodes
FENCE_CLUSTER = "it-fence"  # profile ha with a fence device (up --fencing)
HPC_CLUSTER = "it-hpc"  # profile hpc: Slurm, its controller the group slurm (fenced)
VM_CLUSTER = "it-vm"  # profile vm: the group vm = VIP + a qemu guest on shared storage (fenced)


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


class SandboxPool:
    """At most one sandbox cluster at a time (2 cores cannot carry several): a test asking
    for another cluster than the one that is up gets it after the current one is removed.
    Tests are ordered by the cluster they use (``pytest_collection_modifyitems``), so each
    cluster is built once per run."""

    def __init__(self) -> None:
        self.current: Sandbox | None = None

    def get(self, cluster: str, profile: str, nodes: int = 3, *extra: str) -> Sandbox:
        if self.current is not None and self.current.cluster == cluster:
            return self.current
        self.release()
        cli("down", "--cluster", cluster)  # leftovers of an interrupted earlier run
        result = cli(
            "up", "--cluster", cluster, "--profile", profile, "--nodes", str(nodes), "--json",
            *extra, timeout=900,
        )  # fmt: skip
        if result.rc != 0:
            cli("down", "--cluster", cluster)
            raise AssertionError(f"up of {cluster} failed:\n{result.stderr[-3000:]}")
        self.current = Sandbox(cluster, result, result.json())
        return self.current

    def release(self) -> None:
        if self.current is not None:
            cli("down", "--cluster", self.current.cluster)
            self.current = None


# The clusters in the order their tests run; tests that need none run first, alone.
CLUSTERS = {
    "sandbox": (CLUSTER, "web", 3),  # the walking skeleton: nginx on every node
    "ha_sandbox": (HA_CLUSTER, "ha", 3),  # etcd, agents, group web = VIP + nginx
    "lb_sandbox": (LB_CLUSTER, "lb", 3),  # etcd, agents, group web = VIP + LB (nft)
    "lb5_sandbox": (LB5_CLUSTER, "lb", 5),  # 5 etcd members: two may restart at once
    # the nodes fence each other through the host's fence device
    "fence_sandbox": (FENCE_CLUSTER, "ha", 3, "--fencing"),
    # 4 nodes: a 3-node job runs while the controller's node is killed
    "hpc_sandbox": (HPC_CLUSTER, "hpc", 4),
    "vm_sandbox": (VM_CLUSTER, "vm", 3),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    order = list(CLUSTERS)

    def rank(item: pytest.Item) -> int:
        used = [order.index(f) + 1 for f in getattr(item, "fixturenames", ()) if f in order]
        return min(used, default=0)

    items.sort(key=rank)  # stable: file order within one cluster


@pytest.fixture(scope="session")
def pool() -> Iterator[SandboxPool]:
    sandboxes = SandboxPool()
    try:
        yield sandboxes
    finally:
        sandboxes.release()


@pytest.fixture(scope="session")
def node_image() -> str:
    """The node image, built if missing, for tests that make clusters of their own."""
    from clusterctl.providers.image import ensure_image
    from clusterctl.providers.podman_cli import Podman
    from clusterctl.reporter import ListReporter

    return ensure_image(Podman(STATE_ROOT), ListReporter())


@pytest.fixture
def sandbox(pool: SandboxPool) -> Sandbox:
    return pool.get(*CLUSTERS["sandbox"])


@pytest.fixture
def ha_sandbox(pool: SandboxPool) -> Sandbox:
    return pool.get(*CLUSTERS["ha_sandbox"])


@pytest.fixture
def lb_sandbox(pool: SandboxPool) -> Sandbox:
    return pool.get(*CLUSTERS["lb_sandbox"])


@pytest.fixture
def lb5_sandbox(pool: SandboxPool) -> Sandbox:
    return pool.get(*CLUSTERS["lb5_sandbox"])


@pytest.fixture(scope="module")
def fence_sandbox(pool: SandboxPool) -> Sandbox:
    return pool.get(*CLUSTERS["fence_sandbox"])


@pytest.fixture(scope="module")
def hpc_sandbox(pool: SandboxPool) -> Sandbox:
    return pool.get(*CLUSTERS["hpc_sandbox"])


@pytest.fixture(scope="module")
def vm_sandbox(pool: SandboxPool) -> Sandbox:
    return pool.get(*CLUSTERS["vm_sandbox"])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed test on a cluster with agents reports the cluster's recent history, so a red
    CI run says what the agents did (why a group moved, who fenced) without a re-run."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    pool_ = item.funcargs.get("pool") if hasattr(item, "funcargs") else None
    current = pool_.current if isinstance(pool_, SandboxPool) else None
    if current is None or current.cluster == CLUSTER:  # the web profile has no agents
        return
    result = cli("history", "--cluster", current.cluster, "--since", "5m", timeout=60)
    report.sections.append(
        (f"clusterctl history --cluster {current.cluster}", result.stdout or result.stderr)
    )
    result = cli("status", "--cluster", current.cluster, timeout=60)
    report.sections.append(
        (f"clusterctl status --cluster {current.cluster}", result.stdout or result.stderr)
    )
    # each agent's own sentences (it logs every change): what a holder was waiting for; and
    # etcd's starts and stops (a member restarting under a test costs the quorum)
    for node in (n["name"] for n in current.nodes):
        journal = podman(
            "exec", f"{current.cluster}-{node}", "journalctl", "-u", "clusterctl-agent",
            "-u", "etcd", "--since", "-3min", "--no-pager", "-o", "short-precise", "-n", "80",
            "--grep", "clusterctl|Start|Stop|exited|Failed|leader|elected",
            check=False,
        )  # fmt: skip
        text = journal.stdout or journal.stderr
        report.sections.append((f"agent and etcd journal on {node} (last 3 min)", text))
        # a unit that will not stop: systemd's pending jobs say what it waits for
        jobs = podman(
            "exec", f"{current.cluster}-{node}", "sh", "-c",
            "timeout 5 systemctl list-jobs --no-pager; "
            "journalctl --since -3min --no-pager -o short-precise -n 30 _PID=1",
            check=False,
        )  # fmt: skip
        report.sections.append((f"systemd jobs and messages on {node}", jobs.stdout + jobs.stderr))
