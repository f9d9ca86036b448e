"""`clusterctl up` upgrades a cluster built by the previous version (etcd and the agents on
plain HTTP) to TLS in place: no lost configuration (backend weights and drains, bans,
standby) and never two holders of the VIP, sampled on every node throughout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO, STATE_ROOT, CliResult, Sandbox, SandboxPool, cli
from .hahelpers import HolderSampler, api_status, wait_for, web_group
from .lbhelpers import LoadClient

# the last commit before TLS: its `clusterctl up` builds the cluster to upgrade
PREVIOUS = "63a92f28a543e11495605ed40c40cce4fb6f6c14"
CLUSTER = "it-upgrade"
PLAIN = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def previous_tree() -> Iterator[Path]:
    """The previous version's source, from this repository's history."""
    with tempfile.TemporaryDirectory(prefix="clusterctl-previous-") as tmp:
        archive = Path(tmp) / "previous.tar"
        subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), PREVIOUS],
            check=True,
            capture_output=True,
        )
        tree = Path(tmp) / "tree"
        with tarfile.open(archive) as tar:
            tar.extractall(tree, filter="tar")
        yield tree


def previous_cli(tree: Path, *args: str, timeout: float = 900) -> CliResult:
    env = dict(os.environ, CLUSTERCTL_STATE_DIR=str(STATE_ROOT), PYTHONPATH=str(tree))
    proc = subprocess.run(
        [sys.executable, "-m", "clusterctl", *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=tree,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def _plain_api(sandbox: Sandbox, method: str, path: str, body: dict | None = None) -> dict:
    """The previous version's API: plain HTTP with the token."""
    token = (sandbox.state_dir / "api-token").read_text().strip()
    address = sandbox.nodes[0]["address"]
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{address}:7480{path}", data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    with PLAIN.open(req, timeout=5) as resp:
        return json.loads(resp.read())


def _configuration(status: dict) -> dict:
    """What an operator set, as `clusterctl status --json` shows it."""
    return {
        "backends": {b["node"]: (b["state"], b["weight"]) for b in status["backends"]},
        "bans": {g["name"]: sorted(g.get("bans") or []) for g in status["groups"]},
        "standby": sorted(n["name"] for n in status["nodes"] if n.get("standby")),
    }


def test_up_upgrades_a_plain_http_cluster_to_tls_in_place(
    pool: SandboxPool, previous_tree: Path
) -> None:
    pool.release()  # one cluster at a time
    cli("down", "--cluster", CLUSTER)
    try:
        built = previous_cli(previous_tree, "up", "--cluster", CLUSTER, "--profile", "lb",
                             "--json")  # fmt: skip
        assert built.rc == 0, built.stderr[-3000:]
        sandbox = Sandbox(CLUSTER, built, built.json())
        wait_for(lambda: web_group(_plain_api(sandbox, "GET", "/v1/status")).get("state")
                 == "started", 60, 0.5, "web started on the old cluster")  # fmt: skip
        holder = web_group(_plain_api(sandbox, "GET", "/v1/status"))["node"]
        others = [n["name"] for n in sandbox.nodes if n["name"] != holder]
        # an operator's settings: a weight, a drain, a ban, a standby
        for args in (("weight", "node1", "5"), ("drain", others[0], "--timeout", "5"),
                     ("standby", others[1])):  # fmt: skip
            result = previous_cli(previous_tree, *args, "--cluster", CLUSTER)
            assert result.rc == 0, (args, result.stderr[-2000:])
        _plain_api(sandbox, "POST", "/v1/groups/web/ban", {"node": others[1]})
        before = _configuration(previous_cli(previous_tree, "status", "--cluster", CLUSTER,
                                             "--json").json())  # fmt: skip
        assert before["bans"]["web"] == [others[1]] and before["standby"] == [others[1]]

        with HolderSampler(sandbox, limit=600) as sampler, LoadClient(sandbox.info["vip"]) as load:
            upgraded = cli("up", "--cluster", CLUSTER, timeout=900)
            assert upgraded.rc == 0, upgraded.stderr[-3000:]
            assert "upgrading it in place" in upgraded.stderr
            wait_for(lambda: web_group(api_status(sandbox)).get("state") == "started", 60,
                     0.5, "web started after the upgrade")  # fmt: skip
        doubles = sampler.doubles()
        failed = [p for p in load.probes if p.node is None]
        print(f"\nupgrade to TLS: {len(load.probes)} requests, {len(failed)} failed; "
              f"{sum(len(s) for s in sampler.samples.values())} holder samples, "
              f"{len(doubles)} with two holders")  # fmt: skip
        assert doubles == []
        after_status = cli("status", "--cluster", CLUSTER, "--json")
        assert after_status.rc == 0, after_status.stderr
        assert _configuration(after_status.json()) == before
        # and etcd no longer answers plain HTTP, nor TLS without the cluster's certificate
        for node in sandbox.nodes[:3]:
            with pytest.raises(OSError):
                PLAIN.open(f"http://{node['address']}:2379/health", timeout=3).read()
        record = json.loads((sandbox.state_dir / "cluster.json").read_text())
        assert record["tls"] is True
        again = cli("up", "--cluster", CLUSTER, timeout=900)
        assert again.rc == 0 and "upgrading" not in again.stderr, again.stderr[-2000:]
    finally:
        cli("down", "--cluster", CLUSTER)
