"""Bad input: a one-line error with a hint, non-zero exit, no traceback, nothing half-made."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from .conftest import STATE_ROOT, cli, cluster_leftovers, podman


def assert_clean_error(result, text: str) -> None:
    assert result.rc != 0
    assert "Traceback" not in result.stderr
    assert f"error: {text}" in result.stderr, result.stderr[-2000:]
    assert "hint: " in result.stderr


def ssh_inventory(sandbox, tmp_path, key=None, address_of=None, names=None) -> str:
    key = key or sandbox.state_dir / "id_ed25519"
    address_of = address_of or {}
    names = names or [n["name"] for n in sandbox.nodes]
    lines = ["[cluster]"]
    for name, node in zip(names, sandbox.nodes, strict=True):
        address = address_of.get(node["name"], node["address"])
        lines.append(
            f"{name} ansible_host={address} ansible_user=root ansible_ssh_private_key_file={key}"
        )
    path = tmp_path / "hosts.ini"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_unreachable_host_is_named(sandbox, tmp_path):
    subnet = ipaddress.ip_network(sandbox.info["subnet"])
    unused = str(subnet.network_address + 250)
    inv = ssh_inventory(sandbox, tmp_path, address_of={"node3": unused})
    result = cli("up", "--provider", "ssh", "-i", inv, "--cluster", "it-unreach", timeout=120)
    assert_clean_error(result, f"node node3 ({unused}:22) is unreachable over SSH")
    assert not (STATE_ROOT / "it-unreach").exists()


def test_wrong_ssh_key_is_refused(sandbox, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    inv = ssh_inventory(sandbox, tmp_path, key=other)
    result = cli("up", "--provider", "ssh", "-i", inv, "--cluster", "it-badkey", timeout=120)
    assert_clean_error(result, "SSH authentication to node1 (root@")
    assert "was refused" in result.stderr
    assert not (STATE_ROOT / "it-badkey").exists()


def test_duplicate_address_is_refused(sandbox, tmp_path):
    inv = ssh_inventory(sandbox, tmp_path, address_of={"node2": sandbox.nodes[0]["address"]})
    result = cli("up", "--provider", "ssh", "-i", inv, "--cluster", "it-dup")
    assert_clean_error(result, "nodes node1 and node2 have the same address")


def test_duplicate_name_is_refused(sandbox, tmp_path):
    inv = ssh_inventory(sandbox, tmp_path, names=["node1", "node2", "node1"])
    result = cli("up", "--provider", "ssh", "-i", inv, "--cluster", "it-dup")
    assert_clean_error(result, "node name node1 appears more than once")


def test_subnet_clash_is_refused(sandbox):
    result = cli("up", "--cluster", "it-clash", "--subnet", sandbox.info["subnet"])
    assert_clean_error(result, f"subnet {sandbox.info['subnet']} clashes with existing network")
    assert cluster_leftovers("it-clash") == {"containers": [], "networks": [], "state": []}


def test_cluster_name_in_use_is_refused(sandbox):
    image = podman(
        "inspect", f"{sandbox.cluster}-node1", "--format", "{{.ImageName}}"
    ).stdout.strip()
    podman("rm", "-f", "it-taken-node1", check=False)
    podman("create", "--name", "it-taken-node1", image)
    try:
        result = cli("up", "--cluster", "it-taken")
        assert_clean_error(result, "a container named it-taken-node1 already exists")
        assert not (STATE_ROOT / "it-taken").exists()
    finally:
        podman("rm", "-f", "it-taken-node1")


def test_other_provider_on_existing_cluster_is_refused(sandbox, tmp_path):
    inv = ssh_inventory(sandbox, tmp_path)
    result = cli("up", "--provider", "ssh", "-i", inv, "--cluster", sandbox.cluster)
    assert_clean_error(result, f"cluster {sandbox.cluster!r} already exists with the podman")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_podman_missing_while_not_root(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tmp_path.chmod(0o755)
    (bindir / "python3").symlink_to(sys.executable)
    # a state root the unprivileged user can reach (pytest's tmp_path is root-only)
    state = Path(tempfile.mkdtemp(prefix="clusterctl-it-nopod-"))
    state.chmod(0o777)
    env = {
        "PATH": str(bindir),  # python only: no podman on it
        "HOME": str(tmp_path),
        "CLUSTERCTL_STATE_DIR": str(state),
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    nobody = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    proc = subprocess.run(
        [*nobody, str(bindir / "python3"), "-m", "clusterctl", "up", "--cluster", "it-nopod"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    shutil.rmtree(state, ignore_errors=True)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "error: podman is not installed" in proc.stderr
    assert "ask an administrator to run `apt-get install -y podman runc`" in proc.stderr


def test_too_many_nodes_are_refused_before_anything_is_made():
    """The bound comes from the address plan (nodes from .11, the VIP at .100): checked
    before a single podman call, and nothing is left behind."""
    for args in (("--nodes", "1000"), ("--nodes", "90")):
        result = cli("up", "--cluster", "it-toomany", *args, timeout=60)
        assert_clean_error(result, f"--nodes {args[1]} is more than a sandbox holds")
    left = podman("ps", "-a", "--filter", "name=^it-toomany-", "--format", "{{.Names}}")
    assert left.stdout == ""
    assert cli("down", "--cluster", "it-toomany").rc == 0
    trailing_newline = cli("up", "--cluster", "bad\n", timeout=60)  # `$` alone accepted it
    assert_clean_error(trailing_newline, "invalid cluster name")


def test_a_fence_device_with_a_missing_or_readable_secrets_file_is_refused(sandbox, tmp_path):
    """Checked on the controller before a single node is touched: nothing is made."""
    secrets = tmp_path / "node1.secrets"
    key = str(sandbox.state_dir / "id_ed25519")
    hosts = {
        n["name"]: {"ansible_host": n["address"], "ansible_ssh_private_key_file": key}
        for n in sandbox.nodes
    }
    hosts["node1"]["clusterctl_fence"] = {
        "agent": "fence_ipmilan", "options": {"ip": "10.0.0.1"}, "secrets_file": str(secrets),
    }  # fmt: skip
    inv = tmp_path / "hosts.yml"
    inv.write_text(yaml.safe_dump({"all": {"children": {"cluster": {"hosts": hosts}}}}))
    for mode, words in ((None, "No such file or directory"), (0o644, "(it is mode 644)")):
        if mode is not None:
            secrets.write_text("password=x\n")
            secrets.chmod(mode)
        result = cli("up", "--provider", "ssh", "-i", str(inv), "--cluster", "it-badfence")
        assert_clean_error(result, f"inventory {inv}, host 'node1': fence secrets_file {secrets}")
        assert words in result.stderr
        assert not (STATE_ROOT / "it-badfence").exists()
