"""CLI errors: one line and a hint, exit non-zero, never a traceback."""

import os
import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, env: dict | None = None, tmp_path: Path) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, CLUSTERCTL_STATE_DIR=str(tmp_path / "state"))
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "clusterctl.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


def assert_clean_error(proc: subprocess.CompletedProcess, text: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert f"error: {text}" in proc.stderr, proc.stderr
    assert "hint: " in proc.stderr


def test_bad_cluster_name(tmp_path):
    assert_clean_error(run_cli("up", "--cluster", "Bad_Name", tmp_path=tmp_path), "invalid cluster")


def test_too_few_sandbox_nodes(tmp_path):
    proc = run_cli("up", "--nodes", "2", "--cluster", "tiny", tmp_path=tmp_path)
    assert_clean_error(proc, "--nodes has 2 nodes; a cluster needs at least 3")
    assert not (tmp_path / "state" / "tiny").exists()


def test_inventory_with_two_hosts(tmp_path):
    inv = tmp_path / "hosts.ini"
    inv.write_text("[cluster]\na ansible_host=192.0.2.1\nb ansible_host=192.0.2.2\n")
    proc = run_cli("up", "--provider", "ssh", "-i", str(inv), "--cluster", "two", tmp_path=tmp_path)
    assert_clean_error(proc, f"inventory {inv} has 2 nodes")
    assert not (tmp_path / "state" / "two").exists()


def test_inventory_option_needs_ssh_provider(tmp_path):
    proc = run_cli("up", "-i", "x.yml", tmp_path=tmp_path)
    assert_clean_error(proc, "-i/--inventory is for the ssh provider")


def test_status_of_unknown_cluster(tmp_path):
    assert_clean_error(
        run_cli("status", "--cluster", "ghost", tmp_path=tmp_path), "cluster 'ghost'"
    )


def test_down_of_unknown_cluster_is_a_no_op(tmp_path):
    proc = run_cli("down", "--cluster", "ghost", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to remove" in proc.stderr


def test_podman_missing(tmp_path):
    # a PATH with python but without podman
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").symlink_to(sys.executable)
    proc = run_cli("up", "--cluster", "nopod", env={"PATH": str(bindir)}, tmp_path=tmp_path)
    assert_clean_error(proc, "podman is not installed")
    assert "apt-get install" in proc.stderr or "make up" in proc.stderr


def test_unknown_option(tmp_path):
    proc = run_cli("up", "--frobnicate", tmp_path=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: unrecognized arguments" in proc.stderr


def test_lease_ttl_out_of_range(tmp_path):
    for bad in ("0", "11"):
        proc = run_cli("up", "--cluster", "lease", "--lease-ttl", bad, tmp_path=tmp_path)
        assert_clean_error(proc, f"lease TTL {bad} s is out of range")
    assert not (tmp_path / "state" / "lease").exists()


def test_check_of_a_cluster_that_does_not_exist(tmp_path):
    proc = run_cli("up", "--check", "--cluster", "ghost", tmp_path=tmp_path)
    assert_clean_error(proc, "cluster 'ghost' does not exist: there is nothing to check")
    assert not (tmp_path / "state" / "ghost").exists()


def test_check_with_new_settings_is_refused(tmp_path):
    proc = run_cli("up", "--check", "--lb-engine", "haproxy", tmp_path=tmp_path)
    assert_clean_error(proc, "--check compares the nodes with the cluster's recorded settings")
